"""Licence families, the obligations they carry, and the `licenses:` gate of params.yaml.

Providers fill `license` and `license_url` in their own words: Openverse "CC BY-SA 2.0" (from the
code "by-sa"), Wikimedia "CC BY-SA 4.0", "Public domain", "CC0", Flickr "CC BY-NC 2.0" or
"Public Domain Mark 1.0", the urls and folder providers whatever the user wrote, Brave and Bing
nothing. `family` sorts any of these into one of `FAMILIES`:

* ``CC0/PDM``: public domain (CC0, the Public Domain Mark, "Public domain", Flickr's "No known
  copyright restrictions" and "United States Government Work"): no obligation;
* ``BY``: attribution only; ``BY-SA``: attribution and share-alike;
* ``NC``: any non-commercial licence (by-nc, by-nc-sa, by-nc-nd, nc-sampling+, and sampling+,
  whose whole-work copies are non-commercial only);
* ``ND``: no derivatives (by-nd);
* ``other``: a licence named but not Creative Commons or public domain (All Rights Reserved,
  Pixabay / Pexels / Unsplash licences, GFDL, ...): known terms that fit no CC family, so they
  are neither "unknown" (no information) nor silently put with a CC family;
* ``unknown``: no licence information at all.

The name decides when it is recognised, else the URL (creativecommons.org/licenses/...,
/publicdomain/zero|mark/ and a few providers' licence pages). `summary` counts kept original
images per family (and per split) and states the obligations in plain English; `LicensesParams`
is the `licenses:` section whose `allow` list `datakit curate` applies before split;
`write_attribution` writes ATTRIBUTION.md and attribution.csv (`datakit credits`, `datakit export`).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from datakit.fsutil import atomic_write_text
from datakit.params import SPLIT_NAMES, parse_section
from datakit.stage import ORIGINAL, kept, origins

FAMILIES: tuple[str, ...] = ("CC0/PDM", "BY", "BY-SA", "NC", "ND", "other", "unknown")
PUBLIC, BY, BY_SA, NC, ND, OTHER, UNKNOWN = FAMILIES
REASON = "licence_not_allowed"
NO_SPLIT = "(none)"  # the split of a row that has none

# What a family asks of whoever uses the images (README and ATTRIBUTION.md use these words).
MEANING: dict[str, str] = {
    PUBLIC: "public domain: no conditions",
    BY: "credit the creator",
    BY_SA: "credit the creator; share derived works under the same licence",
    NC: "credit the creator; no commercial use",
    ND: "credit the creator; no derivatives (augmentation makes derivatives)",
    OTHER: "a non-Creative-Commons licence: read its terms",
    UNKNOWN: "no licence information: check before use",
}

# Strings that carry no licence (the urls provider's empty cells, "n/a", ...).
_NO_LICENCE = {"", "none", "null", "nan", "n/a", "na", "-", "unknown", "not specified", "unspecified", "no license",
               "no licence"}
# Long forms -> CC element codes, applied to lower-case text before splitting into words.
_LONG_FORMS = (
    (re.compile(r"\bcc[\s_-]*(?:0|zero)\b"), " cc0 "),
    (re.compile(r"creative\s*commons"), " cc "),
    (re.compile(r"share[\s-]*alike"), " sa "),
    (re.compile(r"non[\s-]*commercial"), " nc "),
    (re.compile(r"no[\s-]*deriv(?:ative)?s?(?:[\s-]*works)?"), " nd "),
    (re.compile(r"attribution"), " by "),
    (re.compile(r"public[\s_-]*domain"), " pd "),
)
_WORD = re.compile(r"[a-z0-9+]+")
_PUBLIC_WORDS = {"cc0", "pd", "pdm"}
_PUBLIC_PHRASES = ("no known copyright restrictions", "united states government work", "us government work",
                   "no restrictions")
# Hosts/paths of licence pages that are not Creative Commons.
_URL_FAMILIES = (
    ("flickr.com/commons/usage", PUBLIC),
    ("usa.gov/copyright", PUBLIC),
    ("wikipedia.org/wiki/public_domain", PUBLIC),
    ("pixabay.com/service/license", OTHER),
    ("pexels.com/license", OTHER),
    ("unsplash.com/license", OTHER),
    ("gnu.org/licenses", OTHER),
    ("gnu.org/copyleft", OTHER),
)


def _blank(value: object) -> bool:
    if value is None or (isinstance(value, float) and value != value):
        return True
    return not isinstance(value, str) or " ".join(value.lower().split()) in _NO_LICENCE


def _cc_family(words: list[str]) -> str | None:
    """The family of CC element words ("by", "nc", "sa", "nd", "sampling+"), or None."""
    found = set(words)
    if "nc" in found or "nc-sampling+" in found or "sampling+" in found:
        return NC
    if "nd" in found:
        return ND
    if "sa" in found:
        return BY_SA
    if "by" in found:
        return BY
    return None


def _from_name(name: str) -> str | None:
    text = " ".join(name.lower().replace("_", " ").split())
    if any(p in text for p in _PUBLIC_PHRASES):
        return PUBLIC
    for pattern, code in _LONG_FORMS:
        text = pattern.sub(code, text)
    words = _WORD.findall(text)
    if _PUBLIC_WORDS & set(words) or ("cc" in words and "zero" in words):
        return PUBLIC
    is_cc = "cc" in words or (bool(words) and words[0] in ("by", "sampling+", "nc"))
    return _cc_family(words) if is_cc else None


def _from_url(url: str) -> str | None:
    raw = url.strip().lower()
    parts = urlsplit(raw if "//" in raw else "//" + raw)
    host = (parts.hostname or "").removeprefix("www.")
    path = parts.path.rstrip("/")
    if host.endswith("creativecommons.org"):
        segments = [s for s in path.split("/") if s]
        if segments[:1] == ["publicdomain"]:
            return PUBLIC
        if segments[:1] == ["licenses"] and len(segments) > 1:
            return _cc_family(segments[1].replace("nc-sampling+", "nc").split("-"))
        return None
    where = f"{host}{path}"
    for marker, fam in _URL_FAMILIES:
        if marker in where:
            return fam
    return None


def family(license: str | None, license_url: str | None = None) -> str:  # noqa: A002 - the manifest's column name
    """The licence family (one of `FAMILIES`) of a manifest row's `license` and `license_url`.

    The name decides when it is recognised ("CC BY-SA 2.0", "by-nc", "Attribution-ShareAlike 4.0
    International", "CC0 1.0", "Public Domain Mark 1.0", "Public domain"); otherwise the URL does
    (creativecommons.org licences and public-domain tools, a few providers' licence pages). A
    name or URL given but recognised by neither is ``other``; neither given is ``unknown``.
    """
    name = None if _blank(license) else str(license)
    url = None if _blank(license_url) else str(license_url)
    if name is not None and (found := _from_name(name)) is not None:
        return found
    if url is not None and (found := _from_url(url)) is not None:
        return found
    return UNKNOWN if name is None and url is None else OTHER


def families(rows: pd.DataFrame) -> pd.Series:
    """`family` of every row (missing columns count as no licence)."""
    names = rows["license"] if "license" in rows.columns else pd.Series(None, index=rows.index, dtype="object")
    urls = rows["license_url"] if "license_url" in rows.columns else pd.Series(None, index=rows.index, dtype="object")
    cache: dict[tuple[object, object], str] = {}
    out = []
    for n, u in zip(names.tolist(), urls.tolist(), strict=True):
        key = (None if _blank(n) else n, None if _blank(u) else u)
        if key not in cache:
            cache[key] = family(*key)  # type: ignore[arg-type]
        out.append(cache[key])
    return pd.Series(out, index=rows.index, dtype="object")


def _counts(fams: pd.Series) -> dict[str, int]:
    return {f: int((fams == f).sum()) for f in FAMILIES}


def _images(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def _are(n: int) -> str:
    return f"{_images(n)} {'is' if n == 1 else 'are'}"


def _split_order(name: str) -> tuple[int, str]:
    """train, val, test first, then other names alphabetically."""
    return (SPLIT_NAMES.index(name) if name in SPLIT_NAMES else len(SPLIT_NAMES), name)


# providers whose API returns no licence at all: every image they give is `unknown`
NO_LICENCE_PROVIDERS = ("brave", "bing", "serpapi")


def warnings(counts: dict[str, int], unknown_from: dict[str, int] | None = None) -> list[str]:
    """The obligations that `counts` (family -> images) carry, one plain-English line each.
    `unknown_from` (provider -> images of unknown licence) says where those came from."""
    lines: list[str] = []
    named = [f for f in (BY, BY_SA, NC, ND) if counts.get(f, 0)]
    credit = sum(counts[f] for f in named)
    if credit:
        lines.append(f"Attribution required: {_images(credit)} ({', '.join(named)}) must be credited with title, "
                     f"creator, licence and source wherever the dataset goes: ship ATTRIBUTION.md with it.")
    if counts.get(BY_SA, 0):
        lines.append(f"Share-alike: {_are(counts[BY_SA])} BY-SA; datasets derived from them must carry "
                     f"the same licence.")
    if counts.get(NC, 0):
        lines.append(f"Non-commercial: {_are(counts[NC])} NC; no commercial use of them or of a dataset "
                     f"that contains them.")
    if counts.get(ND, 0):
        lines.append(f"No derivatives: {_are(counts[ND])} ND; augmentation (crops, flips, colour changes) "
                     f"produces derivatives, so do not augment them or share altered copies.")
    if counts.get(OTHER, 0):
        lines.append(f"Other licences: {_images(counts[OTHER])} {'carries' if counts[OTHER] == 1 else 'carry'} a licence outside Creative Commons (e.g. All "
                     f"Rights Reserved, Pixabay/Pexels/Unsplash licences): read its terms before use.")
    if counts.get(UNKNOWN, 0):
        where = ", ".join(f"{p} {n}" for p, n in sorted((unknown_from or {}).items()))
        silent = [p for p in (unknown_from or {}) if p.lower() in NO_LICENCE_PROVIDERS]
        said = " and ".join(p.capitalize() for p in sorted(silent)) + (" returns" if len(silent) == 1 else " return")
        why = f" (from {where}" + (f"; {said} no licence" if silent else "") + ")" if where else ""
        lines.append(f"Unknown: {_images(counts[UNKNOWN])} {'has' if counts[UNKNOWN] == 1 else 'have'} no licence "
                     f"information{why}: check them before use.")
    return lines


def summary(rows: pd.DataFrame) -> dict[str, Any]:
    """Licence families of the kept original images of `rows`: `images`, `families` (family ->
    count, every family listed), `by_split` (split -> family -> count, when there is a `split`
    column), `licenses` (the names as given -> count), `derived` (kept derived rows, which carry
    their parent's licence and are not counted) and `warnings` (plain-English obligations)."""
    keep = kept(rows)
    original = origins(rows).eq(ORIGINAL)
    chosen = rows[(keep & original).to_numpy(dtype=bool)]
    fams = families(chosen)
    out: dict[str, Any] = {"images": len(chosen), "families": _counts(fams)}
    if "split" in chosen.columns:
        split = chosen["split"].map(cell_text).replace("", NO_SPLIT)
        out["by_split"] = {s: _counts(fams[split == s]) for s in sorted(set(split), key=_split_order)}
    names = chosen["license"] if "license" in chosen.columns else pd.Series(None, index=chosen.index, dtype="object")
    shown = names.map(lambda v: "(none)" if _blank(v) else " ".join(str(v).split()))
    out["licenses"] = {str(k): int(v) for k, v in shown.value_counts().sort_index().items()}
    out["derived"] = int((keep & ~original).sum())
    unknown_from: dict[str, int] = {}
    if "provider" in chosen.columns:
        by = chosen.loc[(fams == UNKNOWN).to_numpy(dtype=bool), "provider"].map(cell_text).replace("", "(no provider)")
        unknown_from = {str(k): int(v) for k, v in by.value_counts().items()}
    out["warnings"] = warnings(out["families"], unknown_from)
    return out


# --- the `licenses:` gate ---------------------------------------------------------------------------
_ALIASES = {"cc0": PUBLIC, "pdm": PUBLIC, "public domain": PUBLIC, "cc0/pdm": PUBLIC, "cc by": BY, "cc by-sa": BY_SA}


def canonical_family(name: str) -> str | None:
    """A family named in params.yaml, case-insensitively ("by-sa", "cc0", "Unknown"); None if none."""
    key = " ".join(str(name).split()).lower()
    for fam in FAMILIES:
        if key == fam.lower():
            return fam
    return _ALIASES.get(key)


class LicensesParams(BaseModel):
    """`licenses:` in params.yaml: which licence families `datakit curate` keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow: list[str] = Field(default_factory=lambda: list(FAMILIES),
                             description="families kept; rows of any other family get keep=False (licence_not_allowed)")

    @field_validator("allow")
    @classmethod
    def _families(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        bad: list[str] = []
        for name in v:
            fam = canonical_family(name) if isinstance(name, str) else None
            if fam is None:
                bad.append(repr(name))
            elif fam not in out:
                out.append(fam)
        if bad:
            raise ValueError(f"unknown licence famil{'ies' if len(bad) > 1 else 'y'} {', '.join(bad)}; "
                             f"allowed: {', '.join(FAMILIES)}")
        return out

    @property
    def filters(self) -> bool:
        """Whether the gate drops anything (not every family is allowed)."""
        return set(self.allow) != set(FAMILIES)


def parse_licenses(data: dict[str, Any] | None) -> LicensesParams:
    """Validate the `licenses:` section (errors name `licenses.<key>`)."""
    return parse_section(LicensesParams, data, "licenses")


def gate(rows: pd.DataFrame, params: LicensesParams) -> tuple[pd.Series, pd.Series]:
    """(each row's family, the kept rows the gate drops: family not in `params.allow`)."""
    fams = families(rows)
    dropped = kept(rows) & ~fams.isin(params.allow)
    return fams, dropped


# --- ATTRIBUTION.md and attribution.csv --------------------------------------------------------------
ATTRIBUTION_MD = "ATTRIBUTION.md"
ATTRIBUTION_CSV = "attribution.csv"
CSV_COLUMNS = ("image_id", "split", "label", "title", "creator", "license", "license_url", "family", "page_url",
               "source_url", "provider")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|!~])")


def cell_text(value: object) -> str:
    """A cell as one line of text ("" for missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return " ".join(str(value).split())


def credited(rows: pd.DataFrame) -> pd.DataFrame:
    """The images to credit: kept originals of `rows` (derived images carry their parent's
    licence), one row each with `CSV_COLUMNS` (`family` computed, missing columns empty, no
    split: `(none)`), in split order (train, val, test, then others), family, label, image_id."""
    chosen = rows[(kept(rows) & origins(rows).eq(ORIGINAL)).to_numpy(dtype=bool)]
    table = pd.DataFrame(index=chosen.index)
    for col in CSV_COLUMNS:
        if col == "family":
            table[col] = families(chosen)
        elif col in chosen.columns:
            table[col] = chosen[col].map(cell_text)
        else:
            table[col] = ""
    table["split"] = table["split"].where(table["split"] != "", NO_SPLIT)
    table["_split"] = table["split"].map(_split_order)
    table["_family"] = table["family"].map(FAMILIES.index)
    table = table.sort_values(["_split", "_family", "label", "image_id"], kind="stable")
    return table.drop(columns=["_split", "_family"]).reset_index(drop=True)


def _csv_cell(value: str) -> str:
    """A spreadsheet would run a cell starting with = + - @ as a formula: such text (titles and
    creators come from the web) is prefixed with an apostrophe, the usual guard."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def attribution_csv(table: pd.DataFrame) -> str:
    """attribution.csv of a `credited` table: a header of `CSV_COLUMNS`, one line per image."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for rec in table[list(CSV_COLUMNS)].itertuples(index=False):
        w.writerow([_csv_cell(str(v)) for v in rec])
    return buf.getvalue()


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def _web_url(url: str) -> str | None:
    """`url` made safe inside a Markdown link, or None when it is not http(s)."""
    if not url or urlsplit(url).scheme.lower() not in ("http", "https"):
        return None
    return quote(url, safe=":/?#@!$&'*+,;=%~.-_")


def _link(text: str, url: str) -> str:
    web = _web_url(url)
    if web:
        return f"[{_md(text)}]({web})"
    return f"{_md(text)} (`{url.replace('`', '')}`)" if url else _md(text)  # not http(s): shown, never a link


def _line(r: Any) -> str:
    title = f"\"{_md(r.title)}\"" if r.title else "Untitled"
    creator = _md(r.creator) if r.creator else "unknown creator"
    licence = _link(r.license, r.license_url) if r.license else (
        _link("licence page", r.license_url) if r.license_url else "no licence information")
    source, what = (r.page_url, "source page") if r.page_url else (r.source_url, "image file")
    where = _link(what, source) if _web_url(source) else (f"{what} `{source.replace('`', '')}`" if source else "no source page")
    return f"- {title} by {creator}, {licence}, {where} (`{r.image_id.replace('`', '')}`, {_md(r.label) or 'no label'})"


def _table_md(summ: dict[str, Any]) -> list[str]:
    rows = dict(summ.get("by_split") or {})
    shown = [f for f in FAMILIES if summ["families"].get(f)] or list(FAMILIES[:1])
    out = ["| split | " + " | ".join(shown) + " | total |", "|---" * (len(shown) + 2) + "|"]
    for name, counts in [*rows.items(), ("**all**", summ["families"])]:
        out.append(f"| {_md(name) if name != '**all**' else name} | " + " | ".join(str(counts.get(f, 0)) for f in shown)
                   + f" | {sum(counts.values())} |")
    return out


def attribution_md(table: pd.DataFrame, summ: dict[str, Any], source: str | None = None) -> str:
    """ATTRIBUTION.md of a `credited` table: the licence summary table and the obligations at
    the top, then per split and licence family one line per image (title, creator, licence with
    its link, source page)."""
    lines = ["# Attribution", ""]
    lines.append(f"Credits for the {summ['images']} original images of this dataset"
                 + (f" (from `{source.replace('`', '')}`)" if source else "") + ", written by `datakit credits`. "
                 "attribution.csv holds the same list for tools.")
    lines += ["", "## Licences", "", *_table_md(summ), "", "## Obligations", ""]
    lines += [f"- {w}" for w in summ["warnings"]] or ["- None: every image is in the public domain."]
    derived = summ.get("derived", 0)
    lines.append("- Derived images (augmented copies and other images made from these) are not listed again: each "
                 "carries the licence and the obligations of the image it was made from"
                 + (f" ({_images(derived)} here)." if derived else "."))
    lines += ["", "Licence families: " + "; ".join(f"**{f}**: {MEANING[f]}" for f in FAMILIES) + "."]
    for split, part in table.groupby("split", sort=False):
        lines += ["", f"## {_md(str(split))} ({_images(len(part))})"]
        for fam, group in part.groupby("family", sort=False):
            lines += ["", f"### {fam} ({_images(len(group))}): {MEANING[str(fam)]}", ""]
            lines += [_line(r) for r in group.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_attribution(rows: pd.DataFrame, folder: Path, source: str | None = None) -> dict[str, Any]:
    """Write FOLDER/ATTRIBUTION.md and FOLDER/attribution.csv (each atomic) for the kept original
    images of `rows`; return their `summary`."""
    folder = Path(folder)
    summ = summary(rows)
    table = credited(rows)
    for name, text in ((ATTRIBUTION_CSV, attribution_csv(table)), (ATTRIBUTION_MD, attribution_md(table, summ, source))):
        atomic_write_text(folder / name, text)  # os.replace: a symlink planted at the name is replaced, not followed
    return summ
