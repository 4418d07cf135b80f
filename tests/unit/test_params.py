"""params.yaml validation (CFG-03..06, CFG-07)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from datakit.errors import ParamsError
from datakit.params import SECTIONS, Params, ScrapeParams, load_params, model_at, override, parse_params, section
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


# ----------------------------------------------------------------- issue 14: strict at every level

# Mapping fields whose keys are data, not settings, each validated where it is read: a new
# free-form mapping must be added here with the place that checks its keys.
FREE_FORM = {
    "scrape.providers.*.options": "each provider checks its own option names (unknown option(s) ...; allowed: ...)",
    "split.ratios": "split names, checked by params.unknown_split_names",
    "split.counts": "split names, checked by params.unknown_split_names",
    "augment.transforms": "albumentations arguments, checked against the transform's signature",
    "balance.target": "class labels of the manifest",
}


def _section_model(name: str) -> type[BaseModel]:
    """The model that validates section `name` (typed on Params, or through SECTIONS)."""
    model = model_at(Params, [name])
    if model is not None:
        return model
    return type(section(parse_params({}), name))


def _levels(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type[BaseModel]]]:
    """Every model nested in `model` with the loc leading to it (`*` stands for a dict key)."""
    found = [(path, model)]
    for name in model.model_fields:
        for step in range(2):  # the field itself (through Optional), or the values of dict[str, M]
            sub = model_at(model, [name, *(["*"] * step)])
            if sub is not None:
                found += _levels(sub, (*path, name, *(["*"] * step)))
                break
    return found


def _raw_at(path: tuple[str, ...], leaf: dict[str, Any]) -> Any:
    """The params mapping that puts `leaf` at `path` (`*` keys become `synthetic`, a dict key
    every mapping of models here accepts)."""
    value: Any = leaf
    for part in reversed(path):
        value = {"synthetic" if part == "*" else part: value}
    return value


def _every_level() -> list[tuple[str, tuple[str, ...], type[BaseModel]]]:
    return [(name, path, model) for name in Params.model_fields
            for path, model in _levels(_section_model(name))]


def test_every_section_is_registered_and_every_model_forbids_extras() -> None:
    typed = {n for n in Params.model_fields if model_at(Params, [n]) is not None}
    assert set(Params.model_fields) == typed | set(SECTIONS), "a section neither typed nor in params.SECTIONS"
    assert not typed & set(SECTIONS)
    levels = _every_level()
    assert len(levels) > len(Params.model_fields)  # nested models are found (scrape.fetch, ...)
    lax = [f"{name}{''.join('.' + p for p in path)}: {model.__name__}" for name, path, model in levels
           if model.model_config.get("extra") != "forbid"]
    assert not lax, f"models that accept unknown keys: {lax}"


def test_free_form_mappings_are_only_the_known_ones() -> None:
    found = []
    for name, path, model in _every_level():
        for field_name, field in model.model_fields.items():
            ann = repr(field.annotation)
            if ("dict[" in ann or "Dict[" in ann) and model_at(model, [field_name, "*"]) is None:
                found.append(".".join((name, *path, field_name)))
            elif "list[dict[" in ann:
                found.append(".".join((name, *path, field_name)))
    assert sorted(set(found)) == sorted(FREE_FORM), "a new free-form mapping: name the place that checks its keys"


@pytest.mark.parametrize("name", list(Params.model_fields))
def test_a_misspelt_key_at_any_level_names_it_and_the_allowed_ones(name: str) -> None:
    """At the section's own level and in every model nested in it (scrape.fetch, scrape.image,
    scrape.providers.<name>, ...): one ParamsError line naming the full key and the allowed ones."""
    for path, model in _levels(_section_model(name)):
        first = next(iter(model.model_fields))
        bad = first + "_x"
        with pytest.raises(ParamsError) as info:
            section(parse_params({name: _raw_at(path, {bad: 1})}, "p.yaml"), name)
        msg = str(info.value)
        dotted = ".".join((name, *("synthetic" if p == "*" else p for p in path), bad))
        assert f"{dotted}: unknown key (did you mean {first}?) (allowed: " + ", ".join(model.model_fields) + ")" in msg, msg
        assert "\n" not in msg


def test_override_names_nested_unknown_keys_with_their_own_level() -> None:
    p = parse_params({})
    with pytest.raises(ParamsError, match=r"scrape\.fetch\.timout_s: unknown key \(allowed: concurrency, "):
        override(p.scrape, "scrape", **{"fetch.timout_s": 3})
    with pytest.raises(ParamsError, match=r"scrape\.providers\.synthetic\.endpont: unknown key \(did you mean "
                                          r"endpoint\?\) \(allowed: endpoint, options\)"):
        parse_params({"scrape": {"providers": {"synthetic": {"endpont": "http://x"}}}})
