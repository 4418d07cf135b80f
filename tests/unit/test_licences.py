"""Licence families on the providers' real strings, the summary and its warnings, the two
attribution files, the `licenses:` gate in curate, and the synthetic provider's licence mix."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from datakit import licences
from datakit.curation import decisions as dec
from datakit.curation.curate import run as curate
from datakit.errors import ParamsError
from datakit.licences import FAMILIES, family, parse_licenses, summary
from datakit.manifest import is_known_reason
from datakit.params import parse_params, section
from datakit.scrape.providers.base import Query
from datakit.scrape.providers.flickr import LICENSES as FLICKR
from datakit.scrape.providers.openverse import license_name
from datakit.scrape.providers.synthetic import LICENSE, synthesize
from datakit.scrape.providers.synthetic_options import LICENCE_CODES, SyntheticOptions
from datakit.stage import StageContext

FLICKR_FAMILY = {
    "0": "other",  # All Rights Reserved: a known licence, not missing information
    "1": "NC", "2": "NC", "3": "NC", "4": "BY", "5": "BY-SA", "6": "ND",
    "7": "CC0/PDM", "8": "CC0/PDM", "9": "CC0/PDM", "10": "CC0/PDM",
    "11": "BY", "12": "BY-SA", "13": "ND", "14": "NC", "15": "NC", "16": "NC",
}


def test_flickr_table_by_name_by_url_and_both() -> None:
    assert set(FLICKR) == set(FLICKR_FAMILY)  # the provider's whole table
    for lid, (name, url) in FLICKR.items():
        assert family(name, url) == FLICKR_FAMILY[lid], (lid, name)
        assert family(name) == FLICKR_FAMILY[lid], (lid, name)
        if url is not None:
            assert family(None, url) == FLICKR_FAMILY[lid], (lid, url)


@pytest.mark.parametrize(("code", "version", "want"), [
    ("by", "2.0", "BY"), ("by-sa", "4.0", "BY-SA"), ("by-nd", "4.0", "ND"), ("by-nc", "3.0", "NC"),
    ("by-nc-sa", "2.0", "NC"), ("by-nc-nd", "4.0", "NC"), ("cc0", "1.0", "CC0/PDM"), ("pdm", "1.0", "CC0/PDM"),
    ("sampling+", "1.0", "NC"), ("nc-sampling+", "1.0", "NC"), ("BY-SA", None, "BY-SA"),
])
def test_openverse_codes_as_the_provider_names_them_and_raw(code: str, version: str | None, want: str) -> None:
    assert family(license_name(code, version)) == want
    assert family(code) == want  # a raw code (urls provider, someone's CSV)
    url = ("https://creativecommons.org/publicdomain/zero/1.0/" if code == "cc0" else
           "https://creativecommons.org/publicdomain/mark/1.0/" if code == "pdm" else
           f"https://creativecommons.org/licenses/{code.lower()}/{version or '4.0'}/")
    assert family(None, url) == want


@pytest.mark.parametrize(("name", "want"), [
    ("CC BY-SA 4.0", "BY-SA"), ("CC BY 3.0", "BY"), ("CC BY-SA 3.0 de", "BY-SA"), ("CC-BY-SA-3.0-migrated", "BY-SA"),
    ("cc-by-sa-4.0,3.0,2.5,2.0,1.0", "BY-SA"), ("CC0", "CC0/PDM"), ("Public domain", "CC0/PDM"), ("PD-old", "CC0/PDM"),
    ("Attribution", "BY"), ("GFDL", "other"), ("Copyrighted free use", "other"),
    ("Creative Commons Attribution-ShareAlike 4.0 International", "BY-SA"),
    ("Attribution-NonCommercial-NoDerivatives 4.0 International", "NC"), ("Attribution-NoDerivs 2.0", "ND"),
    ("CC-0", "CC0/PDM"), ("cc zero", "CC0/PDM"), ("  cc   by  ", "BY"), ("Pixabay Content License", "other"),
    ("Unsplash License", "other"), ("none", "unknown"), ("", "unknown"), ("N/A", "unknown"), (None, "unknown"),
])
def test_wikimedia_and_hand_written_names(name: str | None, want: str) -> None:
    assert family(name) == want


def test_the_url_decides_when_the_name_is_missing_or_unrecognised() -> None:
    assert family(None, "//creativecommons.org/licenses/by-sa/4.0") == "BY-SA"  # Commons' protocol-relative form
    assert family("some licence", "https://creativecommons.org/licenses/by-nd/2.0/deed.en") == "ND"
    assert family(None, "https://creativecommons.org/publicdomain/zero/1.0/legalcode") == "CC0/PDM"
    assert family(None, "https://www.pexels.com/license/") == "other"
    assert family(None, "https://example.org/terms") == "other"
    assert family(float("nan"), float("nan")) == "unknown"  # parquet nulls come back as NaN
    assert family("CC BY 4.0", "https://creativecommons.org/licenses/by-nc/4.0/") == "BY"  # a recognised name wins


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": list("abcdefgh"),
        "label": ["x"] * 8,
        "split": ["train", "train", "val", "test", "train", "train", "train", None],
        "license": ["CC BY-SA 2.0", "CC BY-NC 4.0", None, "CC0 1.0", "CC BY-ND 4.0", "CC BY-SA 2.0", "CC BY 4.0", "CC BY 4.0"],
        "license_url": [None] * 8,
        "keep": [True, True, True, True, True, False, True, True],
        "origin": [None, None, None, None, None, None, "augmented", None],
    })


def test_summary_counts_kept_originals_per_split_and_states_every_obligation() -> None:
    s = summary(_rows())
    assert s["images"] == 6 and s["derived"] == 1  # f not kept; g derived
    assert s["families"] == {"CC0/PDM": 1, "BY": 1, "BY-SA": 1, "NC": 1, "ND": 1, "other": 0, "unknown": 1}
    assert list(s["by_split"]) == ["train", "val", "test", "(none)"]
    assert s["by_split"]["train"] == {"CC0/PDM": 0, "BY": 0, "BY-SA": 1, "NC": 1, "ND": 1, "other": 0, "unknown": 0}
    assert s["licenses"]["(none)"] == 1 and s["licenses"]["CC BY-SA 2.0"] == 1
    text = "\n".join(s["warnings"])
    assert "Attribution required: 4 images (BY, BY-SA, NC, ND)" in text
    assert "Share-alike: 1 image is BY-SA; datasets derived from them must carry the same licence" in text
    assert "Non-commercial: 1 image is NC; no commercial use" in text
    assert "No derivatives: 1 image is ND; augmentation" in text
    assert "Unknown: 1 image has no licence information: check them before use." in text  # no provider column
    # with providers: where the unknown ones came from, and why when the API gives no licence
    rows = _rows().assign(provider=["openverse", "flickr", "brave", "wikimedia", "flickr", "brave", "brave", "urls"],
                          license=lambda d: d["license"].where(d["image_id"] != "h", None))
    text = "\n".join(summary(rows)["warnings"])
    assert "Unknown: 2 images have no licence information (from brave 1, urls 1; Brave returns no licence)" in text
    rows = rows.assign(provider=rows["provider"].replace({"urls": "bing"}))
    assert "(from bing 1, brave 1; Bing and Brave return no licence)" in "\n".join(summary(rows)["warnings"])
    assert "Other licences" not in text
    public = summary(pd.DataFrame({"image_id": ["a"], "license": ["CC0"], "keep": [True]}))
    assert public["warnings"] == [] and "by_split" not in public


def test_attribution_files_escape_and_guard_what_the_web_wrote(tmp_path: Path) -> None:
    rows = pd.DataFrame({
        "image_id": ["a", "b", "c"], "split": ["val", "train", "train"], "label": ["x", "y", "x"],
        "title": ["A *bold* [link](javascript:x)", "=HYPERLINK(\"http://evil\")", None],
        "creator": ["Jane | Doe", "-Bob", None],
        "license": ["CC BY 4.0", "CC BY-SA 4.0", None],
        "license_url": ["https://creativecommons.org/licenses/by/4.0/", "javascript:alert(1)", None],
        "page_url": ["https://example.org/a page (1)", "ftp://x/y", None], "source_url": [None, None, "https://img.example/c.jpg"],
        "provider": ["openverse", "wikimedia", "brave"], "keep": [True, True, True],
    })
    summ = licences.write_attribution(rows, tmp_path, "data/split")
    got = list(csv.DictReader(io.StringIO((tmp_path / "attribution.csv").read_text(encoding="utf-8"))))
    assert [r["image_id"] for r in got] == ["b", "c", "a"]  # train before val; by family, then label
    assert got[0]["title"].startswith("'=HYPERLINK") and got[0]["creator"] == "'-Bob" and got[2]["title"].startswith("A *bold*")
    md = (tmp_path / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "(from `data/split`)" in md and summ["images"] == 3
    assert '"A \\*bold\\* \\[link\\](javascript:x)" by Jane \\| Doe, [CC BY 4.0](https://creativecommons.org/licenses/by/4.0/), ' \
           "[source page](https://example.org/a%20page%20%281%29)" in md
    assert "](javascript:alert" not in md and "](ftp:" not in md  # only http(s) become links
    line_b = next(x for x in md.splitlines() if "(`b`, y)" in x)
    assert line_b == '- "=HYPERLINK(\"http://evil\")" by -Bob, CC BY-SA 4.0 (`javascript:alert(1)`), source page `ftp://x/y` (`b`, y)'
    assert "Untitled by unknown creator, no licence information, [image file](https://img.example/c.jpg)" in md
    assert md.index("## train") < md.index("## val") and md.index("## Obligations") < md.index("## train")


def test_the_licenses_section_accepts_families_any_case_and_names_bad_ones() -> None:
    assert parse_licenses(None).allow == list(FAMILIES) and not parse_licenses({}).filters
    assert parse_licenses({"allow": ["cc0", "by", "By-Sa", "PDM", "Unknown"]}).allow == ["CC0/PDM", "BY", "BY-SA", "unknown"]
    with pytest.raises(ParamsError, match=r"licenses\.allow: unknown licence family 'CC-BY-NC'; allowed: CC0/PDM, BY"):
        section(parse_params({"licenses": {"allow": ["BY", "CC-BY-NC"]}}), "licenses")
    with pytest.raises(ParamsError, match=r"licenses\.deny: unknown key"):
        section(parse_params({"licenses": {"deny": ["NC"]}}), "licenses")
    assert section(parse_params({}), "licenses", allow=["ND"]).allow == ["ND"]  # a CLI override


def test_curate_gate_marks_disallowed_rows_with_a_failures_row_and_counts_them(tmp_path: Path) -> None:
    df = _rows().drop(columns=["split", "origin"])
    df["path"] = [f"i/{c}.jpg" for c in df["image_id"]]
    path = tmp_path / "decisions.csv"
    dec.write(path, {"b": dec.Decision("b", "remove", "x")})  # removed in review first: one reason only
    res = curate(df, parse_licenses({"allow": ["CC0/PDM", "BY", "BY-SA", "unknown"]}), StageContext(root=tmp_path),
                 decisions=path)
    m = res.manifest.set_index("image_id")
    assert is_known_reason(licences.REASON)
    assert not m.at["e", "keep"] and m.at["e", "curate_reason"] == "licence_not_allowed"
    assert m.at["b", "curate_reason"] == "reviewed_remove" and pd.isna(m.at["f", "curate_reason"])  # f: already dropped
    assert m.loc[["a", "c", "d", "g", "h"], "keep"].all()
    f = res.failures.set_index("image_id")
    assert dict(f["reason"]) == {"b": "reviewed_remove", "e": "licence_not_allowed"}
    assert f.at["e", "detail"] == "licence family ND (CC BY-ND 4.0) not in licenses.allow" and f.at["e", "stage"] == "curate"
    rep = res.report["licenses"]
    assert rep["dropped"] == 1 and rep["dropped_by_family"] == {"ND": 1}
    assert rep["kept_by_family"]["BY"] == 2 and rep["kept_by_family"]["ND"] == 0
    everything = curate(df, None, StageContext(root=tmp_path), decisions=tmp_path / "none.csv")
    assert everything.manifest["keep"].tolist() == df["keep"].tolist() and everything.report["licenses"]["dropped"] == 0


def test_synthetic_licence_mix_is_seeded_and_the_default_unchanged() -> None:
    q = Query(text="striped hoodie", item="hoodie", attribute="striped", label="hoodie")
    mix = {"by": 5, "by-sa": 3, "cc0": 2, "by-nc": 1, "by-nd": 1, "none": 1}
    plain = synthesize(q, 60, 0)
    mixed = synthesize(q, 60, 0, {"license_mix": mix})
    assert {h.license for h, _ in plain} == {LICENSE} and family(LICENSE) == "CC0/PDM"
    assert [h.data for h, _ in plain] == [h.data for h, _ in mixed]  # pictures and plan untouched
    got = Counter(family(h.license, h.license_url) for h, _ in mixed)
    assert {"BY", "BY-SA", "CC0/PDM", "NC", "ND", "unknown"} <= set(got) and got["BY"] > got["ND"]
    assert all(h.creator is None for h, _ in mixed if h.license is None)
    again = synthesize(q, 60, 0, {"license_mix": mix})
    assert [(h.license, h.license_url) for h, _ in again] == [(h.license, h.license_url) for h, _ in mixed]
    assert set(LICENCE_CODES) >= {"by", "by-sa", "cc0", "pdm", "by-nc", "by-nd", "none"}
    with pytest.raises(ParamsError, match=r"license_mix: unknown licence code 'by-xx' \(allowed: cc0, pdm, by"):
        SyntheticOptions.parse({"license_mix": {"by-xx": 1}})
    with pytest.raises(ParamsError, match=r"license_mix: at least one weight must be > 0"):
        SyntheticOptions.parse({"license_mix": {"by": 0}})
