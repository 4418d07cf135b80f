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
