"""`synthetic` provider: an offline, deterministic stand-in for an image search engine.

Each query gets a ranked list of rendered garment pictures (see `datakit.scrape.synthetic_render`)
whose bytes travel in `Hit.data`. Like a real engine, the list is messy on purpose, so the rest
of the pipeline has something to clean:

* **exact duplicates**: an earlier result of the same query again, byte for byte, at a later rank;
* **near-duplicates**: an earlier result re-encoded at another JPEG quality, resized, cropped by
  2-8 % or brightened (the bytes always differ from the source);
* **cross-query copies**: a picture that belongs to another query of the same item (other
  attribute) or the same attribute (other item), exactly or nearly, so the same picture carries
  two labels; it is rendered from that other query's seed, so it is the very picture the other
  query returns at that rank;
* **broken files**: a truncated JPEG, zero bytes, an HTML error page or random bytes, all declared
  as images;
* **wrong labels** (`wrong_item`, off by default): a garment of another item with the query's
  attribute, a picture no other query returns, so only its look gives it away (`datakit suspects`);
* **unequal counts**: a query "has" between `min_fraction` and 100 % of the results asked for
  (drawn per query), so `search(query, n)` returns fewer than `n` for most queries.

Determinism: everything depends only on (`settings.seed`, the query's item and attribute, or its
text when it has neither, the rank, the number asked for, and the options). Seeds come from
sha256 of those values (never `hash()`, the clock or global random state), so the same call gives
byte-identical results in any process. Two queries with the same item and attribute get the same
pictures, as two phrasings of one search would. When `Query.item` / `Query.attribute` are None
they are recognised from the query text ("striped hoodies" -> hoodie, striped).

Options (`settings.options`, i.e. `scrape.providers.synthetic.options` in params.yaml):

=============  ===========================================  =====================================
key            default                                      meaning
=============  ===========================================  =====================================
exact_dup      0.05                                         share of results that are exact copies
near_dup       0.10                                         share that are near-duplicates
cross_query    0.03                                         share copied from another query
broken         0.03                                         share of broken files
wrong_item     0.0                                          share showing another item (a wrong label to find)
min_fraction   0.55                                         least share of `n` a query returns
size           320                                          longest side; sides are size/2..size
formats        {"jpeg": 0.85, "png": 0.10, "webp": 0.05}    relative weights of stored formats
license_mix    null (every result CC0 1.0)                  relative weights of licence codes drawn
                                                            per result: cc0, pdm, by, by-sa, by-nc,
                                                            by-nc-sa, by-nd, by-nc-nd, none (no
                                                            licence, as Brave and Bing return)
=============  ===========================================  =====================================

Shares are of the results a query returns and are rounded to whole results (so a list of 17 or
more results has at least one of each kind at the defaults); the four shares may add up to at
most 0.9. Unknown keys and bad values raise `ParamsError` naming the key and what is allowed.

Ground truth: `SyntheticProvider.truths` maps each hit's `provider_id` to a `ResultTruth` (what
the result is, which picture it shows, and the drawn garment with its colour); the pure function
`synthesize` returns the same pairs without a provider.
"""

from __future__ import annotations

import asyncio
import html
import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageEnhance

from datakit.scrape.providers.base import Hit, Page, Provider, ProviderSettings, Query, SearchHttp
from datakit.scrape.providers.synthetic_options import LICENCE_CODES, MIME_BY_FORMAT, SHARES, SyntheticOptions
from datakit.scrape.synthetic_render import ATTRIBUTES, ITEMS, GarmentTruth, derive_seed, render

LICENSE = "cc0"
LICENSE_URL = "https://creativecommons.org/publicdomain/zero/1.0/"
CREATOR = "datakit synthetic"

_PIL_FORMAT: dict[str, str] = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}

_BROKEN_KINDS: dict[str, float] = {"truncated": 0.4, "empty": 0.2, "html": 0.2, "random": 0.2}

_ITEM_WORDS: dict[str, str] = {
    "blouse": "blouse", "blouses": "blouse",
    "hoodie": "hoodie", "hoodies": "hoodie", "hoody": "hoodie",
    "pullover": "pullover", "pullovers": "pullover",
    "sweater": "sweater", "sweaters": "sweater",
    "shirt": "shirt", "shirts": "shirt",
    "t-shirt": "t-shirt", "t-shirts": "t-shirt", "tshirt": "t-shirt", "tshirts": "t-shirt",
    "tee": "t-shirt", "tees": "t-shirt",
    "vest": "vest", "vests": "vest",
}
_ATTRIBUTE_WORDS: dict[str, str] = {
    "striped": "striped", "stripes": "striped", "stripe": "striped", "stripy": "striped",
    "dotted": "dotted", "dots": "dotted", "dot": "dotted", "polka": "dotted",
    "leopard": "leopard",
}


# --------------------------------------------------------------------------------------------
# queries


def _slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "query"


def _words(text: str) -> list[str]:
    text = re.sub(r"\bt[\s_]+shirt", "t-shirt", text.lower())
    return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text)


def _canonical(value: str | None, words: Mapping[str, str], text: str) -> str | None:
    if value is not None and value.strip():
        name = " ".join(value.lower().split())
        return words.get(name, words.get(name.replace(" ", "-"), name))
    for word in _words(text):
        if word in words:
            return words[word]
    return None


@dataclass(frozen=True)
class QueryKey:
    """What a query's pictures are derived from: item and attribute, or the text without them."""

    item: str | None
    attribute: str | None
    text: str = ""

    @classmethod
    def of(cls, query: Query) -> QueryKey:
        """The key of a query (item and attribute canonicalised, or read from the text).

        Args:
            query: the search query.

        Returns:
            Its key; `text` is set only when neither item nor attribute is known.
        """
        item = _canonical(query.item, _ITEM_WORDS, query.text)
        attribute = _canonical(query.attribute, _ATTRIBUTE_WORDS, query.text)
        text = "" if (item or attribute) else " ".join(query.text.lower().split())
        return cls(item, attribute, text)

    def parts(self) -> tuple[str, str, str]:
        """The key as strings, for seeding.

        Returns:
            (item or "", attribute or "", text).
        """
        return (self.item or "", self.attribute or "", self.text)

    def image_id(self, rank: int) -> str:
        """A stable name for the original picture at `rank` of this key's list.

        Args:
            rank: 1-based rank.

        Returns:
            "item|attribute|text#rank", with "*" for a missing item or attribute.
        """
        return f"{self.item or '*'}|{self.attribute or '*'}|{self.text}#{rank}"

    def neighbours(self) -> list[QueryKey]:
        """Keys that cross-query copies are taken from.

        Returns:
            Keys sharing the item (with each other known attribute) and keys sharing the
            attribute (with each other known item); only set fields are varied.
        """
        out: list[QueryKey] = []
        if self.attribute is not None:
            out += [QueryKey(self.item, a) for a in ATTRIBUTES if a != self.attribute]
        if self.item is not None:
            out += [QueryKey(i, self.attribute) for i in ITEMS if i != self.item]
        return out


# --------------------------------------------------------------------------------------------
# result plan


@dataclass(frozen=True)
class Slot:
    """One planned result: what it is and where its picture comes from.

    Attributes:
        rank: 1-based rank in the list.
        kind: "original", "exact_dup", "near_dup", "cross_query", "broken" or "wrong_item".
        source_rank: rank of the source picture (in this list, or in `source_key`'s list).
        source_key: the other query, for "cross_query".
        variant: "exact"/"near" for cross-query copies; "truncated", "empty", "html" or
            "random" for broken files; None otherwise.
    """

    rank: int
    kind: str
    source_rank: int | None = None
    source_key: QueryKey | None = None
    variant: str | None = None


def result_count(key: QueryKey, want: int, seed: int, opts: SyntheticOptions) -> int:
    """How many results the query "has" when `want` are asked for.

    Args:
        key: the query's key.
        want: how many results were asked for.
        seed: `settings.seed`.
        opts: provider options.

    Returns:
        A count between about `opts.min_fraction * want` and `want` (at least 1).
    """
    rng = np.random.default_rng(derive_seed("synthetic-count", seed, *key.parts()))
    fraction = opts.min_fraction + (1.0 - opts.min_fraction) * rng.random()
    return max(1, min(want, int(fraction * want + 0.5)))


def _layout(key: QueryKey, want: int, seed: int, opts: SyntheticOptions,
            cross_possible: bool) -> list[str]:
    """Kinds of the results in rank order (rank 1 first, always an original)."""
    total = result_count(key, want, seed, opts)
    counts = {k: int(getattr(opts, k) * total + 0.5) for k in SHARES}
    if not cross_possible:
        counts["cross_query"] = 0
    for k in ("wrong_item", "cross_query", "near_dup", "exact_dup", "broken"):  # keep at least one original
        excess = sum(counts.values()) - (total - 1)
        if excess > 0:
            counts[k] -= min(counts[k], excess)
    kinds = [k for k in SHARES for _ in range(counts[k])]
    kinds += ["original"] * (total - len(kinds))
    rng = np.random.default_rng(derive_seed("synthetic-layout", seed, *key.parts(), total))
    order = [kinds[int(i)] for i in rng.permutation(total)]
    first = order.index("original")
    order[0], order[first] = order[first], order[0]
    return order


def plan_results(key: QueryKey, want: int, seed: int, opts: SyntheticOptions) -> list[Slot]:
    """The ranked plan of a query's results, before any picture is drawn.

    Args:
        key: the query's key.
        want: how many results were asked for.
        seed: `settings.seed`.
        opts: provider options.

    Returns:
        One `Slot` per result, in rank order.
    """
    neighbours = key.neighbours()
    kinds = _layout(key, want, seed, opts, bool(neighbours))
    rng = np.random.default_rng(derive_seed("synthetic-plan", seed, *key.parts(), len(kinds)))
    slots: list[Slot] = []
    originals: list[int] = []
    broken_names = list(_BROKEN_KINDS)
    broken_p = np.array([_BROKEN_KINDS[n] for n in broken_names])
    for index, kind in enumerate(kinds):
        rank = index + 1
        if kind == "original":
            originals.append(rank)
            slots.append(Slot(rank, kind))
        elif kind in ("exact_dup", "near_dup"):
            slots.append(Slot(rank, kind, source_rank=originals[int(rng.integers(len(originals)))]))
        elif kind == "broken":
            variant = broken_names[int(rng.choice(len(broken_names), p=broken_p / broken_p.sum()))]
            source = originals[int(rng.integers(len(originals)))]
            slots.append(Slot(rank, kind, source_rank=source, variant=variant))
        elif kind == "wrong_item":  # a fresh drawing of another item: past any rank that query returns
            others = [QueryKey(i, key.attribute) for i in ITEMS if i != key.item] or neighbours
            other = others[int(rng.integers(len(others)))]
            slots.append(Slot(rank, kind, source_rank=want + 1 + rank, source_key=other, variant="wrong_item"))
        else:  # cross_query
            other = neighbours[int(rng.integers(len(neighbours)))]
            other_kinds = _layout(other, want, seed, opts, True)
            other_originals = [i + 1 for i, k in enumerate(other_kinds) if k == "original"]
            source = other_originals[int(rng.integers(len(other_originals)))]
            variant = "exact" if rng.random() < 0.5 else "near"
            slots.append(Slot(rank, kind, source_rank=source, source_key=other, variant=variant))
    return slots


# --------------------------------------------------------------------------------------------
# pictures and files


@dataclass(frozen=True)
class ResultTruth:
    """Ground truth of one synthetic result.

    Attributes:
        kind: "original", "exact_dup", "near_dup", "cross_query", "broken" or "wrong_item".
        variant: see `Slot.variant`.
        image_id: the original picture shown (for broken files: the picture a truncated file
            was cut from, else None). Equal ids mean the same drawing.
        source_rank: rank of the source picture in this list (dups, broken) or in the other
            query's list (cross-query copies).
        garment: what the picture shows, including its main colour; None for broken files.
            For near-duplicates the geometry fields (size, bbox, coverage) describe the source.
    """

    kind: str
    variant: str | None
    image_id: str | None
    source_rank: int | None
    garment: GarmentTruth | None


@dataclass(frozen=True)
class _Encoded:
    data: bytes
    fmt: str
    quality: int | None
    width: int
    height: int
    garment: GarmentTruth | None
    image_id: str | None


def _choose(rng: np.random.Generator, weights: tuple[tuple[str, float], ...]) -> str:
    p = np.array([w for _, w in weights], dtype=np.float64)
    return weights[int(rng.choice(len(weights), p=p / p.sum()))][0]


def encode_image(image: Image.Image, fmt: str, quality: int | None = None) -> bytes:
    """Encode a picture deterministically (no metadata, fixed encoder settings).

    Args:
        image: an RGB picture.
        fmt: "jpeg", "png" or "webp".
        quality: JPEG/WEBP quality (ignored for PNG).

    Returns:
        The file's bytes.
    """
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, "JPEG", quality=quality or 85)
    elif fmt == "png":
        image.save(buf, "PNG", compress_level=3)
    elif fmt == "webp":
        image.save(buf, "WEBP", quality=quality or 80, method=3)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()


def _quality(rng: np.random.Generator, fmt: str) -> int | None:
    if fmt == "png":
        return None
    return int(rng.integers(72, 96))


def _original(key: QueryKey, rank: int, seed: int, opts: SyntheticOptions) -> _Encoded:
    image_seed = derive_seed("synthetic-image", seed, *key.parts(), rank)
    drawn = render(key.item, key.attribute, image_seed, opts.size)
    rng = np.random.default_rng(derive_seed("synthetic-encode", image_seed))
    fmt = _choose(rng, opts.formats)
    quality = _quality(rng, fmt)
    data = encode_image(drawn.image, fmt, quality)
    return _Encoded(data, fmt, quality, drawn.image.width, drawn.image.height, drawn.truth,
                    key.image_id(rank))


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def _near_duplicate(source: _Encoded, rng: np.random.Generator) -> _Encoded:
    """Another version of `source`: re-encoded, resized, cropped and/or brightened."""
    image = _decode(source.data)
    if source.fmt == "jpeg" and rng.random() < 0.25:
        ops: list[str] = []  # only a different JPEG quality
    else:
        ops = [op for op in ("resize", "crop", "brighten") if rng.random() < 0.45]
        if not ops:
            ops = [("resize", "crop", "brighten")[int(rng.integers(3))]]
    if "crop" in ops:  # 2-8 % of each side in total
        w, h = image.size
        left, right, top, bottom = (rng.uniform(0.01, 0.04) for _ in range(4))
        box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
        image = image.crop(box)
    if "resize" in ops:
        factor = rng.uniform(0.6, 0.9) if rng.random() < 0.7 else rng.uniform(1.1, 1.25)
        w, h = image.size
        image = image.resize((max(16, round(w * factor)), max(16, round(h * factor))),
                             Image.Resampling.BILINEAR)
    if "brighten" in ops:
        factor = rng.uniform(1.08, 1.3) if rng.random() < 0.7 else rng.uniform(0.78, 0.92)
        image = ImageEnhance.Brightness(image).enhance(factor)
    fmt = "jpeg" if (not ops or rng.random() < 0.8) else source.fmt
    quality = _quality(rng, fmt)
    if fmt == "jpeg":
        quality = int(rng.integers(40, 93))
        if not ops and source.quality is not None and abs(quality - source.quality) < 8:
            quality = quality - 20 if quality >= 60 else quality + 20
    data = encode_image(image, fmt, quality)
    if data == source.data:  # practically impossible; keep the promise that bytes differ
        image = ImageEnhance.Brightness(image).enhance(1.15)
        data = encode_image(image, fmt, quality)
    return _Encoded(data, fmt, quality, image.width, image.height, source.garment, source.image_id)


def _broken(variant: str, source: _Encoded, rng: np.random.Generator, query: Query
            ) -> tuple[bytes, str, int | None, int | None]:
    """Bytes of a broken file, its declared type and declared size."""
    if variant == "truncated":
        data = source.data if source.fmt == "jpeg" else encode_image(_decode(source.data), "jpeg", 85)
        cut = int(len(data) * rng.uniform(0.35, 0.7))
        return data[:cut], "image/jpeg", source.width, source.height
    if variant == "empty":
        return b"", "image/jpeg", None, None
    if variant == "html":
        page = (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>403 Forbidden</title>"
            "</head>\n<body><h1>Forbidden</h1><p>Hotlinking of images is not allowed. "
            f"You searched for: {html.escape(query.text)}</p></body></html>\n"
        )
        return page.encode("utf-8"), "image/jpeg", None, None
    noise = bytearray(rng.bytes(int(rng.integers(256, 4096))))
    noise[0] = 0  # never starts like a real image signature
    return bytes(noise), ("image/jpeg" if rng.random() < 0.7 else "image/png"), None, None


def _title(key: QueryKey, rank: int) -> str:
    """A page title: what the page is about (the source query for copies) and the rank."""
    text = " ".join(w for w in (key.attribute, key.item) if w) or key.text or "picture"
    return f"{text[:1].upper()}{text[1:]}, result {rank}"


def licence_of(key: QueryKey, rank: int, seed: int, opts: SyntheticOptions) -> tuple[str | None, str | None, str | None]:
    """(license, license_url, creator) of the result at `rank`: the CC0 constant, or a draw from
    `opts.license_mix` seeded by the query and rank alone (no other draw changes). A result
    without a licence has no creator either, as a web search result."""
    if not opts.license_mix:
        return LICENSE, LICENSE_URL, CREATOR
    rng = np.random.default_rng(derive_seed("synthetic-license", seed, *key.parts(), rank))
    name, url = LICENCE_CODES[_choose(rng, opts.license_mix)]
    return name, url, CREATOR if name is not None else None


def synthesize(query: Query, want: int, seed: int = 0,
               options: SyntheticOptions | Mapping[str, Any] | None = None
               ) -> list[tuple[Hit, ResultTruth]]:
    """All results of one query, with their ground truth (pure and deterministic).

    Args:
        query: the search query.
        want: how many results were asked for; fewer may come back, never more.
        seed: `settings.seed`.
        options: `SyntheticOptions` or a raw options mapping (validated).

    Returns:
        (hit, truth) pairs in rank order; hits carry their bytes in `data`.
    """
    opts = options if isinstance(options, SyntheticOptions) else SyntheticOptions.parse(options)
    if want < 1:
        return []
    key = QueryKey.of(query)
    slug = _slug(query.text)
    own: dict[int, _Encoded] = {}

    def original(rank: int) -> _Encoded:
        if rank not in own:
            own[rank] = _original(key, rank, seed, opts)
        return own[rank]

    out: list[tuple[Hit, ResultTruth]] = []
    for slot in plan_results(key, want, seed, opts):
        rng = np.random.default_rng(derive_seed("synthetic-variant", seed, *key.parts(), slot.rank))
        declared: tuple[int | None, int | None]
        if slot.kind == "broken":
            assert slot.source_rank is not None and slot.variant is not None
            source = original(slot.source_rank)
            data, mime, width, height = _broken(slot.variant, source, rng, query)
            declared = (width, height)
            truncated = slot.variant == "truncated"
            truth = ResultTruth(slot.kind, slot.variant, source.image_id if truncated else None,
                                slot.source_rank if truncated else None, None)
            title = _title(key, slot.rank)
        else:
            if slot.kind == "original":
                enc = original(slot.rank)
            elif slot.kind == "exact_dup":
                assert slot.source_rank is not None
                enc = original(slot.source_rank)
            elif slot.kind == "near_dup":
                assert slot.source_rank is not None
                enc = _near_duplicate(original(slot.source_rank), rng)
            else:
                assert slot.source_key is not None and slot.source_rank is not None
                enc = _original(slot.source_key, slot.source_rank, seed, opts)
                if slot.variant == "near":
                    enc = _near_duplicate(enc, rng)
            data, mime = enc.data, MIME_BY_FORMAT[enc.fmt]
            declared = (enc.width, enc.height)
            truth = ResultTruth(slot.kind, slot.variant, enc.image_id, slot.source_rank,
                                enc.garment)
            title = _title(slot.source_key or key, slot.rank)
        lic, lic_url, creator = licence_of(key, slot.rank, seed, opts)
        hit = Hit(
            url="",
            provider_id=f"synthetic:{slug}:{slot.rank}",
            page_url=f"synthetic://{slug}/{slot.rank}",
            license=lic,
            license_url=lic_url,
            creator=creator,
            title=title,
            declared_width=declared[0],
            declared_height=declared[1],
            declared_type=mime,
            data=data,
        )
        out.append((hit, truth))
    return out


class SyntheticProvider(Provider):
    """Offline provider that renders garment pictures (see the module docstring)."""

    name: ClassVar[str] = "synthetic"
    offline: ClassVar[bool] = True
    max_results: ClassVar[int | None] = None
    page_size: ClassVar[int] = 50

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        self.options = SyntheticOptions.parse(settings.options)
        self.truths: dict[str, ResultTruth] = {}

    async def _fetch_page(self, query: Query, cursor: Any, want: int, page_no: int,
                          http: SearchHttp | None) -> Page:
        """Render the whole result list of `query` as one page (rendering runs in a thread)."""
        pairs = await asyncio.to_thread(synthesize, query, want, self.settings.seed, self.options)
        for hit, truth in pairs:
            assert hit.provider_id is not None
            self.truths[hit.provider_id] = truth
        hits = [hit for hit, _ in pairs]
        return Page(hits=hits, next=None, total=len(hits))
