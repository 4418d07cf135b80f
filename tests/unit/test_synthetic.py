"""Tests of the offline `synthetic` provider and its garment renderer."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datakit.errors import ParamsError
from datakit.scrape.providers.base import Hit, ProviderSettings, Query
from datakit.scrape.providers.synthetic import (
    QueryKey,
    ResultTruth,
    SyntheticProvider,
    result_count,
    synthesize,
)
from datakit.scrape.providers.synthetic_options import DEFAULT_OPTIONS, SyntheticOptions
from datakit.scrape.synthetic_render import (
    ATTRIBUTES,
    ITEMS,
    PALETTE,
    render,
    render_garment,
    silhouette,
)

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def query(item: str | None, attribute: str | None, text: str | None = None) -> Query:
    words = " ".join(w for w in (attribute, item) if w)
    return Query(text=text or words, label=item or words, item=item, attribute=attribute)


def truth_of(provider: SyntheticProvider, hit: Hit) -> ResultTruth:
    assert hit.provider_id is not None
    return provider.truths[hit.provider_id]


def search(provider: SyntheticProvider, q: Query, n: int = 50) -> list[Hit]:
    return asyncio.run(provider.search(q, n, None))


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()  # full decode: a truncated file fails here, not at open()
    return im


def decodes(data: bytes) -> bool:
    try:
        decode(data)
    except (OSError, SyntaxError, ValueError, EOFError):  # what Pillow raises on bad files
        return False
    return True


QUERIES = [query("hoodie", "striped"), query("vest", "leopard"), query("blouse", "dotted"),
           query("t-shirt", "striped")]


@pytest.fixture(scope="module")
def results() -> tuple[SyntheticProvider, dict[str, list[Hit]]]:
    provider = SyntheticProvider(ProviderSettings(seed=0))
    return provider, {q.text: search(provider, q) for q in QUERIES}


def all_hits(results: tuple[SyntheticProvider, dict[str, list[Hit]]]) -> list[Hit]:
    return [h for hits in results[1].values() for h in hits]


# ---------------------------------------------------------------------------- determinism


def _fingerprint(hits: list[Hit]) -> list[tuple[Any, ...]]:
    return [(h.rank, h.provider_id, h.declared_type, h.title, h.data) for h in hits]


def test_same_call_twice_is_byte_identical() -> None:
    q = query("sweater", "dotted")
    opts = {"size": 128}
    a = search(SyntheticProvider(ProviderSettings(seed=7, options=opts)), q, 30)
    b = search(SyntheticProvider(ProviderSettings(seed=7, options=opts)), q, 30)
    assert _fingerprint(a) == _fingerprint(b)


def test_other_seed_gives_other_bytes() -> None:
    q = query("sweater", "dotted")
    a = search(SyntheticProvider(ProviderSettings(seed=7, options={"size": 128})), q, 30)
    b = search(SyntheticProvider(ProviderSettings(seed=8, options={"size": 128})), q, 30)
    same = {h.data for h in a if h.data} & {h.data for h in b if h.data}
    assert not same


_CHILD = """
import asyncio, hashlib
from datakit.scrape.providers.base import ProviderSettings, Query
from datakit.scrape.providers.synthetic import SyntheticProvider
p = SyntheticProvider(ProviderSettings(seed=3, options={"size": 96}))
hits = asyncio.run(p.search(Query("dotted shirt", "shirt", "shirt", "dotted"), 12, None))
print(hashlib.sha256(b"".join(h.data or b"" for h in hits)).hexdigest())
"""


@pytest.mark.integration
def test_results_do_not_depend_on_hash_randomisation() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        path = os.pathsep.join(p for p in sys.path if p)  # the same import roots as this process
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": path}
        out = subprocess.run(  # noqa: S603 - our own interpreter and a constant script
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    p = SyntheticProvider(ProviderSettings(seed=3, options={"size": 96}))
    hits = search(p, Query("dotted shirt", "shirt", "shirt", "dotted"), 12)
    digests.add(hashlib.sha256(b"".join(h.data or b"" for h in hits)).hexdigest())
    assert len(digests) == 1


# ---------------------------------------------------------------------------- counts


def test_counts_vary_per_query_and_never_exceed_want(results: Any) -> None:
    opts = SyntheticOptions()
    counts = [result_count(QueryKey(i, a), 50, 0, opts) for i in ITEMS for a in ATTRIBUTES]
    assert len(set(counts)) > 5
    assert all(int(0.55 * 50) <= c <= 50 for c in counts)
    assert min(counts) < 45
    for q, hits in zip(QUERIES, results[1].values(), strict=True):
        assert len(hits) == result_count(QueryKey.of(q), 50, 0, opts) <= 50
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    small = search(SyntheticProvider(ProviderSettings(options={"size": 64})), QUERIES[0], 3)
    assert 1 <= len(small) <= 3


def test_min_fraction_one_returns_exactly_want() -> None:
    p = SyntheticProvider(ProviderSettings(options={"min_fraction": 1.0, "size": 64}))
    assert len(search(p, query("shirt", "leopard"), 20)) == 20


# ---------------------------------------------------------------------------- hit fields


def test_hit_fields(results: Any) -> None:
    hits = all_hits(results)
    assert len({h.provider_id for h in hits}) == len(hits)
    for h in hits:
        assert h.url == "" and h.data is not None
        assert h.provider_id and h.provider_id.startswith("synthetic:")
        assert h.page_url and h.page_url.startswith("synthetic://")
        assert h.license == "cc0"
        assert h.license_url == "https://creativecommons.org/publicdomain/zero/1.0/"
        assert h.creator and h.title and h.declared_type in MIME.values()


def test_every_non_broken_result_decodes_with_its_declared_type(results: Any) -> None:
    provider, _ = results
    formats: set[str] = set()
    for h in all_hits(results):
        truth = truth_of(provider, h)
        if truth.kind == "broken":
            continue
        assert h.data is not None
        im = decode(h.data)
        assert im.format is not None
        formats.add(im.format)
        assert MIME[im.format] == h.declared_type
        assert im.size == (h.declared_width, h.declared_height)
        assert 80 <= max(im.size) <= 400
    assert "JPEG" in formats and len(formats) >= 2


# ---------------------------------------------------------------------------- messy results


def test_exact_duplicates_share_bytes_with_an_earlier_rank(results: Any) -> None:
    provider, by_query = results
    found = 0
    for hits in by_query.values():
        by_rank = {h.rank: h for h in hits}
        for h in hits:
            truth = truth_of(provider, h)
            if truth.kind == "exact_dup":
                found += 1
                assert truth.source_rank is not None and truth.source_rank < h.rank
                assert by_rank[truth.source_rank].data == h.data
        assert len({h.data for h in hits}) < len(hits)  # some bytes repeat
    assert found >= len(by_query)


def _thumb(data: bytes) -> np.ndarray:
    """A 16 x 16 grey thumbnail, normalised to zero mean and unit variance."""
    im = decode(data).convert("L").resize((16, 16), Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.float32).ravel()
    return (a - a.mean()) / (a.std() + 1e-6)


def _likeness(a: bytes, b: bytes) -> float:
    return float((_thumb(a) * _thumb(b)).mean())  # correlation: immune to brightening


def test_near_duplicates_decode_differ_in_bytes_and_look_alike(results: Any) -> None:
    provider, by_query = results
    found = 0
    for hits in by_query.values():
        by_rank = {h.rank: h for h in hits}
        originals = [h for h in hits if truth_of(provider, h).kind == "original"]
        for h in hits:
            truth = truth_of(provider, h)
            if truth.kind != "near_dup":
                continue
            found += 1
            assert truth.source_rank is not None and truth.source_rank < h.rank
            source = by_rank[truth.source_rank]
            assert source.data is not None and h.data is not None
            assert h.data != source.data
            near = _likeness(h.data, source.data)
            others = [_likeness(o.data or b"", source.data) for o in originals
                      if o.rank != source.rank]
            assert near > 0.8 and near > np.median(others)
    assert found >= 2 * len(by_query)


def test_broken_files_are_present_and_undecodable(results: Any) -> None:
    provider, by_query = results
    for hits in by_query.values():
        broken = [h for h in hits if truth_of(provider, h).kind == "broken"]
        assert broken
        for h in broken:
            assert h.data is not None and not decodes(h.data)


def test_every_kind_of_broken_file_fails_a_full_decode() -> None:
    p = SyntheticProvider(ProviderSettings(seed=1, options={"broken": 0.6, "size": 96}))
    hits = search(p, query("pullover", "striped"), 60)
    variants = set()
    for h in hits:
        truth = truth_of(p, h)
        if truth.kind == "broken":
            variants.add(truth.variant)
            assert h.data is not None and not decodes(h.data), truth.variant
        else:
            assert h.data is not None and decodes(h.data)
    assert variants == {"truncated", "empty", "html", "random"}
    truncated = [h for h in hits if truth_of(p, h).variant == "truncated"]
    assert all((h.data or b"").startswith(b"\xff\xd8") for h in truncated)


def test_cross_query_copies_come_from_a_neighbouring_query(results: Any) -> None:
    provider, by_query = results
    copies = [(q, h) for q in QUERIES for h in by_query[q.text]
              if truth_of(provider, h).kind == "cross_query"]
    assert len(copies) >= len(QUERIES) - 1
    for q, h in copies:
        truth = truth_of(provider, h)
        assert truth.image_id and truth.garment is not None and truth.variant in ("exact", "near")
        src_item, src_attr, _ = truth.image_id.split("#")[0].split("|")
        # same item with another attribute, or same attribute with another item
        assert (src_item == q.item) != (src_attr == q.attribute)
        assert (truth.garment.item, truth.garment.pattern) == (src_item, src_attr)
        assert h.data is not None and decodes(h.data)


def test_cross_query_exact_copy_matches_the_other_querys_result() -> None:
    opts = {"cross_query": 0.4, "size": 80}
    p = SyntheticProvider(ProviderSettings(seed=5, options=opts))
    hits = search(p, query("shirt", "dotted"), 30)
    exact = [h for h in hits if truth_of(p, h).variant == "exact"]
    assert exact
    for h in exact[:3]:
        truth = truth_of(p, h)
        item, attr, _ = (truth.image_id or "").split("#")[0].split("|")
        other = search(SyntheticProvider(ProviderSettings(seed=5, options=opts)), query(item, attr), 30)
        assert {o.rank: o.data for o in other}[truth.source_rank or 0] == h.data


# ---------------------------------------------------------------------------- rendering


def test_item_silhouettes_differ() -> None:
    seeds = range(4)
    means = {item: np.mean([silhouette(item, s, 96) for s in seeds], axis=0)
             for item in ITEMS + ("unknown-item",)}
    assert np.abs(means["vest"] - means["hoodie"]).mean() > 0.1
    # the vest has no sleeves: far less garment at the sides
    assert means["vest"][:, :20].mean() < 0.2 * means["hoodie"][:, :20].mean()
    for a, b in itertools.combinations(means, 2):
        assert np.abs(means[a] - means[b]).mean() > 0.025, (a, b)


def test_render_is_deterministic_and_reports_its_colour() -> None:
    a = render("shirt", None, 11, 200)
    b = render("shirt", None, 11, 200)
    assert a.image.tobytes() == b.image.tobytes()
    assert render_garment("shirt", None, 12, 200).tobytes() != a.image.tobytes()
    truth = a.truth
    assert truth.item == "shirt" and truth.pattern == "plain" and truth.accent_name is None
    assert truth.colour_name in PALETTE
    pixels = np.asarray(a.image, dtype=np.float32)[a.mask > 0.99]
    assert np.linalg.norm(np.median(pixels, axis=0) - np.array(truth.colour_rgb)) < 40
    assert 0.03 < truth.coverage < 0.8
    assert a.mask.shape == (truth.height, truth.width)


def test_patterns_use_two_colours_and_unknown_names_fall_back() -> None:
    for attribute in ATTRIBUTES:
        r = render("t-shirt", attribute, 3, 240)
        assert r.truth.pattern == attribute and r.truth.accent_name in PALETTE
        inside = np.asarray(r.image, dtype=np.float32)[r.mask > 0.99]
        # the accent colour really is on the garment
        near_accent = np.linalg.norm(inside - np.array(r.truth.accent_rgb), axis=1) < 60
        assert near_accent.mean() > 0.03, attribute
    r = render("poncho", "floral", 3, 160)
    assert (r.truth.item, r.truth.pattern) == ("generic", "plain")


def test_item_and_attribute_are_read_from_the_text_when_missing() -> None:
    p = SyntheticProvider(ProviderSettings(options={"size": 64}))
    hits = search(p, Query(text="Striped Hoodies", label="x"), 8)
    garments = [truth_of(p, h).garment for h in hits
                if truth_of(p, h).kind == "original"]
    assert garments and all(g is not None and (g.item, g.pattern) == ("hoodie", "striped")
                            for g in garments)


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"exact_dupes": 0.1}, ["exact_dupes", "exact_dup", "near_dup", "min_fraction"]),
        ({"broken": 1.5}, ["broken"]),
        ({"near_dup": "lots"}, ["near_dup"]),
        ({"min_fraction": 0}, ["min_fraction"]),
        ({"exact_dup": 0.5, "near_dup": 0.5}, ["exact_dup", "near_dup"]),
        ({"size": "big"}, ["size"]),
        ({"size": True}, ["size"]),
        ({"formats": {"gif": 1}}, ["formats", "gif", "jpeg"]),
        ({"formats": {"png": -1}}, ["formats"]),
        ({"formats": {"png": 0}}, ["formats"]),
    ],
)
def test_bad_options_raise_params_error_naming_the_key(options: dict[str, Any],
                                                      names: list[str]) -> None:
    with pytest.raises(ParamsError) as err:
        SyntheticProvider(ProviderSettings(options=options))
    for name in names:
        assert name in str(err.value)


def test_default_options_are_accepted_and_formats_weights_apply() -> None:
    assert SyntheticOptions.parse(DEFAULT_OPTIONS) == SyntheticOptions()
    p = SyntheticProvider(ProviderSettings(options={"formats": {"png": 1}, "size": 64}))
    hits = search(p, query("vest", "dotted"), 15)
    originals = [h for h in hits if truth_of(p, h).kind == "original"]
    assert originals and all(h.declared_type == "image/png" for h in originals)
    assert all(decode(h.data or b"").format == "PNG" for h in originals)


def test_wrong_item_results_show_another_item_never_returned_elsewhere() -> None:
    """Issue 15: `wrong_item` plants wrong labels the suspects stage must find by the look alone."""
    opts = {"wrong_item": 0.2, "exact_dup": 0, "near_dup": 0, "cross_query": 0, "broken": 0, "min_fraction": 1.0}
    q = Query(text="striped vest", label="vest", item="vest", attribute="striped")
    pairs = synthesize(q, 20, 0, opts)
    wrong = [t for _, t in pairs if t.kind == "wrong_item"]
    assert len(wrong) == 4
    assert all(t.garment.item != "vest" and t.garment.pattern == "striped" for t in wrong)
    others = {t.garment.item for t in wrong}
    # none of them is a picture the other item's own query returns
    returned = set()
    for item in others:
        returned |= {t.image_id for _, t in synthesize(Query(text=f"striped {item}", label=item, item=item, attribute="striped"), 20, 0, opts)}
    assert not {t.image_id for t in wrong} & returned
    # off by default: the default lists are what they were
    assert all(t.kind != "wrong_item" for _, t in synthesize(q, 20, 0, {}))
