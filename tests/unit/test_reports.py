"""Stage reports: the data's figures apart from the run's facts, and the headline metrics DVC shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datakit.console import read_report, run_facts_path, split_run_facts, write_report
from datakit.errors import DatakitError
from datakit.report.metrics import HEADLINE, headline
from datakit.report.parts import RunFiles


def test_timings_go_beside_the_report_and_the_report_is_the_same_on_a_rerun(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "dedup.json"
    first = {"kept": 10, "seconds": 1.234, "images_per_s": 99.0, "downloaded_now": 7,
             "by_signal": {"crop": 3, "hash_seconds": 0.5}, "per_label": {"a": 1}}
    write_report(path, first)
    stable = path.read_bytes()
    assert json.loads(stable) == {"kept": 10, "by_signal": {"crop": 3}, "per_label": {"a": 1}}
    assert json.loads(run_facts_path(path).read_text()) == {
        "seconds": 1.234, "images_per_s": 99.0, "downloaded_now": 7, "by_signal": {"hash_seconds": 0.5}}
    assert run_facts_path(path).name == "dedup.run.json"
    assert read_report(path) == first  # the stage's report as it made it

    # the same data on another day: other timings, the same declared report, byte for byte
    write_report(path, {**first, "seconds": 9.9, "images_per_s": 1.0, "by_signal": {"crop": 3, "hash_seconds": 4.0}})
    assert path.read_bytes() == stable
    assert read_report(path)["seconds"] == 9.9


def test_a_report_without_run_facts_writes_no_companion(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    write_report(path, {"images": 5})
    assert not run_facts_path(path).exists()
    assert read_report(path) == {"images": 5}
    assert split_run_facts({"a": {"b": {"c_seconds": 1, "d": 2}}}) == ({"a": {"b": {"d": 2}}}, {"a": {"b": {"c_seconds": 1}}})


def test_headline_metrics_are_flat_named_scalars_in_pipeline_order(tmp_path: Path) -> None:
    reports = {
        "scrape": {"stored": 723, "per_label": {"a": 1}},
        "dedup": {"removed": 95},
        "suspects": {"estimated_noise": 0.079166, "flagged": 45},
        "split": {"per_split": {"train": 503, "val": 64, "test": 61}},
        "audit": {"leaks": 0, "ok": True},
        "evaluate": {"accuracy": 0.83606557, "balanced_accuracy": float("nan"), "macro_f1": 0.8306},
    }
    for stage, rep in reports.items():
        write_report(tmp_path / f"{stage}.json", rep)
    got = headline(RunFiles({}, tmp_path, tmp_path).report)  # the report's own reader: each file read once
    assert got == {"scraped": 723, "duplicates": 95, "label_noise": 0.0792, "flagged": 45,
                   "n_train": 503, "n_val": 64, "n_test": 61, "leaks": 0, "accuracy": 0.8361, "macro_f1": 0.8306}
    assert list(got) == [name for name, *_ in HEADLINE if name in got]  # pipeline order
    assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in got.values())
    assert headline(RunFiles({}, tmp_path / "nothing-here", tmp_path).report) == {}
    assert headline(RunFiles({}, None, tmp_path).report) == {}
    (tmp_path / "split.json").write_text("{not json")  # damaged: one clear error naming the file, as the page gives
    with pytest.raises(DatakitError, match="split.json"):
        headline(RunFiles({}, tmp_path, tmp_path).report)


def test_the_report_counts_balanced_train_rows_as_balance_does(tmp_path: Path) -> None:
    """Balance counts every row training uses (augment's variants included); the report's funnel
    column must count the same, or it warns "report from another run?" on a consistent run."""
    import pandas as pd

    from datakit.manifest import write_table
    from datakit.report.parts import RunFiles
    from datakit.report.sections import funnel, funnel_section
    from datakit.stage import AUGMENTED, ORIGIN, ORIGINAL, OVERSAMPLED

    folder = tmp_path / "data" / "balance"
    folder.mkdir(parents=True)
    rows = [("a", ORIGINAL)] * 2 + [("a", AUGMENTED)] * 4 + [("b", ORIGINAL)] + [("b", AUGMENTED)] * 2 + [("b", OVERSAMPLED)] * 3
    df = pd.DataFrame({"image_id": [f"{i:064x}" for i in range(len(rows))], "path": [None] * len(rows),
                       "label": [r[0] for r in rows], ORIGIN: [r[1] for r in rows], "split": "train", "keep": True})
    write_table(df, folder / "manifest.parquet")
    reports = tmp_path / "reports"
    write_report(reports / "balance.json", {"counts_after": {"a": 6, "b": 6}})
    run = RunFiles({"balance": folder}, reports, tmp_path)
    cols, by_label = funnel(run, "label")
    assert {k: r["balanced train"] for k, r in by_label.items()} == {"a": 6, "b": 6}
    notes: list[str] = []
    funnel_section(run, notes)
    assert not any("another run" in n for n in notes), notes
    write_report(reports / "balance.json", {"counts_after": {"a": 6, "b": 5}})  # a report of another run
    notes = []
    funnel_section(RunFiles({"balance": folder}, reports, tmp_path), notes)
    assert any("another run" in n for n in notes)
