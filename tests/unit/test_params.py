"""params.yaml validation (CFG-03..06, CFG-07)."""

from __future__ import annotations

import pytest

from datakit.errors import ParamsError
from datakit.params import ScrapeParams, load_params, parse_params
from datakit.scrape.queries import build_queries, check_labels


def test_default_matrix_is_21_queries() -> None:
    qs = build_queries(ScrapeParams())
    assert len(qs) == 21
    assert qs[0].text == "striped blouse" and qs[0].label == "blouse"
    assert {q.label for q in qs} == {"blouse", "hoodie", "pullover", "sweater", "shirt", "t-shirt", "vest"}


@pytest.mark.parametrize("label,expected", [("attribute", "striped"), ("query", "striped blouse")])
def test_label_choice(label: str, expected: str) -> None:
    assert build_queries(ScrapeParams(label=label))[0].label == expected


def test_unknown_key_names_the_key(tmp_path) -> None:  # CFG-06
    with pytest.raises(ParamsError, match=r"scrape\.fetch\.timout: unknown key"):
        parse_params({"scrape": {"fetch": {"timout": 10}}})


def test_wrong_types_and_ranges(tmp_path) -> None:  # CFG-05
    with pytest.raises(ParamsError) as info:
        parse_params({"scrape": {"per_query": "10s", "fetch": {"concurrency": 0, "deadline_s": -1}}})
    msg = str(info.value)
    assert "scrape.per_query" in msg and "scrape.fetch.concurrency" in msg and "scrape.fetch.deadline_s" in msg


def test_duplicate_yaml_key(tmp_path) -> None:  # CFG-06
    p = tmp_path / "params.yaml"
    p.write_text("scrape:\n  per_query: 5\n  per_query: 6\n")
    with pytest.raises(ParamsError, match="duplicate key 'per_query'"):
        load_params(p)


def test_secrets_refused(tmp_path) -> None:  # CFG-03
    with pytest.raises(ParamsError, match="looks like a credential") as info:
        parse_params({"scrape": {"providers": {"brave": {"options": {"api_key": "CANARY-123"}}}}})
    assert "CANARY-123" not in str(info.value)


@pytest.mark.parametrize("labels", [["Cat", "cat"], ["café", "cafe\u0301"], ["CON"], ["ok", "bad."], ["a/b"]])
def test_colliding_labels(labels: list[str]) -> None:  # CFG-07
    with pytest.raises(ParamsError):
        check_labels(labels)


def test_bad_template() -> None:
    with pytest.raises(ParamsError, match="template"):
        parse_params({"scrape": {"template": "{colour} {item}"}})


# ----------------------------------------------------------------------------- issue 13 (B6, B7)

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key, closest", [("dedupe", "dedup"), ("scrap", "scrape"), ("trian", "train")])
def test_misspelt_section_is_refused_naming_file_key_and_closest(key: str, closest: str) -> None:  # CFG-06, B6
    with pytest.raises(ParamsError) as info:
        parse_params({key: {"threshold": 3}}, "conf/params.yaml")
    msg = str(info.value)
    assert msg.startswith("conf/params.yaml: ") and repr(key) in msg
    assert f"did you mean {closest}?" in msg
    assert "allowed: " in msg and "scrape" in msg and "colors" in msg and "\n" not in msg


def test_misspelt_section_through_load_params(tmp_path) -> None:  # CFG-06, B6
    p = tmp_path / "params.yaml"
    p.write_text("dedup: {threshold: 20}\nsplt: {seed: 3}\n")
    with pytest.raises(ParamsError, match=r"params\.yaml: unknown section 'splt' \(did you mean split\?\)"):
        load_params(p)


def _sections_the_project_uses() -> set[str]:
    """Every top-level key the project's params files hold or its dvc.yaml stages declare."""
    import yaml

    found: set[str] = set()
    for params in (REPO / "params.yaml", REPO / "pipelines" / "demo" / "params.yaml"):
        found |= set(yaml.safe_load(params.read_text(encoding="utf-8")))
    for dvc in (REPO / "dvc.yaml", REPO / "pipelines" / "demo" / "dvc.yaml"):
        for stage in yaml.safe_load(dvc.read_text(encoding="utf-8"))["stages"].values():
            for ref in stage.get("params", []):
                found |= {str(k).split(".")[0] for k in (ref if isinstance(ref, dict) else {ref: None})}
    return found


def test_every_section_the_project_uses_is_accepted() -> None:  # B6: the strict top level refuses none of them
    used = _sections_the_project_uses()
    assert {"scrape", "dedup", "split", "audit", "augment", "balance", "embed", "train", "evaluate", "colors",
            "compute"} <= used
    parse_params({name: {} for name in used})
    for params in (REPO / "params.yaml", REPO / "pipelines" / "demo" / "params.yaml"):
        load_params(params)


@pytest.mark.parametrize("raw, offset", [(b"scrape:\n  items: [caf\xe9]\n", 21), (b"\xff\xfe\x00s", 0)])
def test_non_utf8_params_is_one_line_naming_file_and_offset(tmp_path, raw: bytes, offset: int) -> None:  # B7
    p = tmp_path / "params.yaml"
    p.write_bytes(raw)
    with pytest.raises(ParamsError) as info:
        load_params(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}: not UTF-8") and msg.count(str(p)) == 1 and f"byte offset {offset}," in msg and "\n" not in msg


def test_params_folder_is_a_clear_error(tmp_path) -> None:  # B7's neighbour: a folder where a file is expected
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path)


def test_nested_unknown_key_suggests_the_closest() -> None:  # CFG-06, B6's neighbour one level down
    with pytest.raises(ParamsError, match=r"dedup\.treshold: unknown key \(did you mean threshold\?\) \(allowed: "):
        parse_params({"dedup": {"treshold": 3}})
    from datakit.colors import parse_colors

    with pytest.raises(ParamsError, match=r"colors\.forground: unknown key \(did you mean foreground\?\)"):
        parse_colors({"forground": "auto"})


def test_a_section_that_is_not_a_mapping_names_itself_and_an_empty_one_means_defaults() -> None:
    with pytest.raises(ParamsError, match=r"^p\.yaml: colors: expected a mapping of keys \(got 'auto'\)$"):
        parse_params({"colors": "auto"}, "p.yaml")
    assert parse_params({"train": None, "dedup": None}).dedup.crop_threshold == 24
