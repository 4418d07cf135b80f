"""Splitter properties (reliability.md 2.8 SPL-01..14, plan 4.2 item 1) on random group structures."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datakit.errors import ParamsError
from datakit.split import assign, carry_over, folds, plan, validate_ratios

CI = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Data:
    """One drawn dataset: rows of (label, group), the ratios, a seed, and whether groups span classes."""

    labels: list[str]
    groups: list[str]
    ratios: dict[str, float]
    seed: int
    spanning: bool


@st.composite
def group_sizes(draw: st.DrawFn) -> list[int]:
    """1-40 groups with skewed sizes; sometimes one group holds half the class."""
    sizes = draw(st.lists(st.sampled_from([1, 1, 1, 1, 2, 2, 3, 5, 8]), min_size=1, max_size=40))
    if len(sizes) > 1 and draw(st.booleans()):
        sizes[0] = max(1, sum(sizes[1:]))
    return sizes


@st.composite
def ratio_sets(draw: st.DrawFn) -> dict[str, float]:
    """Ratios from a simplex over 1-3 named splits, sometimes with zeros."""
    k = draw(st.integers(1, 3))
    weights = draw(st.lists(st.integers(0, 10), min_size=k, max_size=k).filter(lambda w: sum(w) > 0))
    names = ["train", "val", "test"][:k]
    return {n: w / sum(weights) for n, w in zip(names, weights, strict=True)}


@st.composite
def datasets(draw: st.DrawFn, allow_spanning: bool = True) -> Data:
    n_classes = draw(st.integers(1, 8))
    labels: list[str] = []
    groups: list[str] = []
    for c in range(n_classes):
        for g, size in enumerate(draw(group_sizes())):
            labels += [f"class{c}"] * size
            groups += [f"c{c}-g{g}"] * size
    spanning = False
    if allow_spanning and n_classes > 1:
        # A few groups span classes: add rows of another class to an existing group.
        for _ in range(draw(st.integers(0, 3))):
            target = draw(st.sampled_from(sorted(set(groups))))
            other = f"class{draw(st.integers(0, n_classes - 1))}"
            labels += [other] * draw(st.integers(1, 3))
            groups += [target] * (len(labels) - len(groups))
            spanning = spanning or other != target.split("-")[0].replace("c", "class", 1)
    return Data(labels, groups, draw(ratio_sets()), draw(st.integers(0, 2**32)), spanning)


def _group_labels(labels: list[str], groups: list[str]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for lab, grp in zip(labels, groups, strict=True):
        out[grp][lab] += 1
    return out


def _active(ratios: dict[str, float]) -> list[str]:
    return [s for s, r in ratios.items() if r > 0]


def _check_partition_and_groups(data: Data, out: list[str]) -> None:
    assert len(out) == len(data.labels)  # SPL-01: every row exactly once
    assert set(out) <= set(data.ratios)
    seen: dict[str, str] = {}
    for grp, s in zip(data.groups, out, strict=True):  # SPL-02
        assert seen.setdefault(grp, s) == s, f"group {grp} straddles {seen[grp]} and {s}"


@CI
@given(datasets())
def test_partition_groups_bound_and_coverage(data: Data) -> None:
    """SPL-01, 02, 06, 08, 09, 10, 14 under the default tiny_classes='error'."""
    per_group = _group_labels(data.labels, data.groups)
    n_groups = Counter(lab for counts in per_group.values() for lab in counts)
    k = len(_active(data.ratios))
    tiny = sorted(c for c, g in n_groups.items() if g < k)
    try:
        result = plan(data.labels, data.groups, ratios=data.ratios, seed=data.seed)
    except ParamsError as exc:
        if tiny:  # SPL-10: names a tiny class and its counts
            assert any(repr(c) in str(exc) for c in tiny) and "groups" in str(exc)
            return
        # Enough groups everywhere: only shared (multi-class) groups can make coverage fail.
        assert data.spanning, f"feasible data refused: {exc}"
        return
    assert not tiny, "a class with too few groups must be refused"
    out = result.splits
    _check_partition_and_groups(data, out)
    n_c = Counter(data.labels)
    n_cs = Counter(zip(data.labels, out, strict=True))
    for c in n_c:
        g_c = max(counts[c] for counts in per_group.values())
        assert result.largest_group[c] == g_c
        bound = max(g_c, result.excess[c])
        for s, r in data.ratios.items():
            assert abs(n_cs[c, s] - r * n_c[c]) <= bound + 1e-9  # SPL-08 in images
            assert abs(n_cs[c, s] / n_c[c] - r) <= g_c / n_c[c] + result.excess[c] / n_c[c] + 1e-9
            if r > 0:
                assert n_cs[c, s] > 0, f"{c} missing from {s}"  # SPL-09
            else:
                assert n_cs[c, s] == 0  # SPL-14: zero ratio stays empty
        if not data.spanning:
            # Independent cap on the forced excess: only the coverage seeds (the k smallest groups).
            sizes = sorted(counts[c] for counts in per_group.values() if c in counts)
            assert result.excess[c] <= sum(sizes[:k]) + 1e-9


@CI
@given(datasets())
def test_tiny_classes_go_to_train(data: Data) -> None:
    """SPL-10 policy: with tiny_classes='train' nothing is refused and tiny classes sit in one split."""
    result = plan(data.labels, data.groups, ratios=data.ratios, seed=data.seed, tiny_classes="train")
    _check_partition_and_groups(data, result.splits)
    first = _active(data.ratios)[0]
    for c in result.tiny:
        assert {s for lab, s in zip(data.labels, result.splits, strict=True) if lab == c} == {first}


@CI
@given(datasets(), st.randoms(use_true_random=False))
def test_row_order_does_not_matter(data: Data, rnd: object) -> None:
    """SPL-11: a permuted input gives the same split per row."""
    order = list(range(len(data.labels)))
    rnd.shuffle(order)  # type: ignore[attr-defined]
    kw = {"ratios": data.ratios, "seed": data.seed, "tiny_classes": "train"}
    base = assign(data.labels, data.groups, **kw)  # type: ignore[arg-type]
    perm = assign([data.labels[i] for i in order], [data.groups[i] for i in order], **kw)  # type: ignore[arg-type]
    assert perm == [base[i] for i in order]


NONTRIVIAL_LABELS = [f"class{i % 3}" for i in range(300)]
NONTRIVIAL_GROUPS = [f"g{i // 2}" for i in range(300)]


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.integers(0, 2**32), st.integers(0, 2**32))
def test_seed_is_used(a: int, b: int) -> None:
    """SPL-12: two different seeds give different assignments on non-trivial data."""
    if a == b:
        return
    assert assign(NONTRIVIAL_LABELS, NONTRIVIAL_GROUPS, seed=a) != assign(NONTRIVIAL_LABELS, NONTRIVIAL_GROUPS, seed=b)


@CI
@given(datasets(allow_spanning=False), datasets(allow_spanning=False), st.integers(0, 5))
def test_previous_groups_never_move(v1: Data, extra: Data, joiners: int) -> None:
    """SPL-13: re-splitting a grown dataset with `previous` keeps every old group in its split."""
    first = plan(v1.labels, v1.groups, ratios=v1.ratios, seed=v1.seed, tiny_classes="train")
    # v2 = v1 + new groups (names prefixed so they are new) + new images joining old groups.
    labels = v1.labels + extra.labels + [v1.labels[i] for i in range(min(joiners, len(v1.labels)))]
    groups = v1.groups + [f"new-{g}" for g in extra.groups] + [v1.groups[i] for i in range(min(joiners, len(v1.groups)))]
    second = plan(labels, groups, ratios=v1.ratios, seed=v1.seed + 1, previous=first.group_split, tiny_classes="train")
    for grp, s in first.group_split.items():
        assert second.group_split[grp] == s
    assert second.splits[: len(v1.labels)] == first.splits
    for grp, s in zip(groups[len(v1.labels) + len(extra.labels):], second.splits[len(v1.labels) + len(extra.labels):], strict=True):
        assert s == first.group_split[grp]  # a new image joining an old group takes its split


_CHILD = """
import hashlib, json, sys
from datakit.split import assign, folds
labels, groups = json.loads(sys.stdin.read())
out = assign(labels, groups, seed=7) + [str(f) for f in folds(labels, groups, 3, seed=7)]
print(hashlib.sha256("\\n".join(out).encode()).hexdigest())
"""


@pytest.mark.integration
def test_same_output_under_any_pythonhashseed() -> None:
    """SPL-11 across processes: PYTHONHASHSEED 0, 1, 2 give byte-identical assignments."""
    labels = [f"cls-{i % 5}" for i in range(400)]
    groups = [f"grp-{(i * 7919) % 160}" for i in range(400)]
    payload = json.dumps([labels, groups])
    digests = set()
    for hs in ("0", "1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs, "PYTHONPATH": str(REPO / "src")}
        run = subprocess.run([sys.executable, "-c", _CHILD], input=payload, env=env, capture_output=True, text=True, check=True, timeout=60)
        digests.add(run.stdout.strip())
    local = assign(labels, groups, seed=7) + [str(f) for f in folds(labels, groups, 3, seed=7)]
    assert digests == {hashlib.sha256("\n".join(local).encode()).hexdigest()}


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize(
    "ratios, needle",
    [
        ({"train": 0.9, "val": 0.2, "test": -0.1}, "-0.1"),
        ({"train": math.nan, "val": 0.5}, "NaN"),
        ({"train": 1.5, "val": -0.5}, "1.5"),
        ({"train": 0.0, "val": 0.0}, "all ratios are zero"),
        ({"train": 0.8, "val": 0.1}, "sum to"),
        ({}, "no splits"),
    ],
)
def test_bad_ratios_are_refused(ratios: dict[str, float], needle: str) -> None:
    """CFG-04: the message lists the values."""
    with pytest.raises(ParamsError, match="split.ratios") as info:
        validate_ratios(ratios)
    assert needle in str(info.value)


def test_ratio_sum_tolerance() -> None:
    validate_ratios({"train": 0.7, "val": 0.2, "test": 0.1})  # 0.9999999999999999
    validate_ratios({"train": 0.8 + 5e-7, "val": 0.2})


@pytest.mark.parametrize("ratios", [{"train": 0.9, "val": 0.1, "test": 0.0}, {"train": 1.0, "val": 0.0, "test": 0.0}])
def test_edge_ratios(ratios: dict[str, float]) -> None:
    """SPL-14: empty splits exactly as specified."""
    labels = ["a"] * 50 + ["b"] * 50
    out = assign(labels, [str(i) for i in range(100)], ratios=ratios)
    for s, r in ratios.items():
        assert out.count(s) == round(r * 100)


def test_big_singleton_classes_hit_the_ratios_exactly() -> None:
    labels = [f"c{i % 4}" for i in range(4000)]
    result = plan(labels, [str(i) for i in range(4000)], seed=3)
    for c in result.counts:
        assert result.excess[c] == 0
        assert all(abs(n - t) <= 1 for n, t in zip(result.counts[c], result.targets[c], strict=True))


def test_one_group_two_labels_stays_together() -> None:
    """SPL-06: a picture labelled cat and dog is one unit."""
    labels = ["cat", "dog"] + ["cat"] * 20 + ["dog"] * 20
    groups = ["shared", "shared"] + [f"c{i}" for i in range(20)] + [f"d{i}" for i in range(20)]
    out = assign(labels, groups, seed=1)
    assert out[0] == out[1]


def test_tiny_class_error_names_class_and_counts() -> None:
    labels = ["rare", "rare"] + ["common"] * 30
    groups = ["r1", "r2"] + [str(i) for i in range(30)]
    with pytest.raises(ParamsError, match=r"'rare' has 2 groups \(2 images\) but needs 3"):
        assign(labels, groups)
    out = assign(labels, groups, tiny_classes="train")
    assert out[:2] == ["train", "train"]


def test_fixed_counts_per_class() -> None:
    labels = ["a"] * 100 + ["b"] * 60
    groups = [str(i) for i in range(160)]
    out = assign(labels, groups, counts={"val": 20, "test": 10}, seed=5)
    per = Counter(zip(labels, out, strict=True))
    assert per["a", "val"] == per["b", "val"] == 20
    assert per["a", "test"] == per["b", "test"] == 10
    assert per["a", "train"] == 70 and per["b", "train"] == 30
    with pytest.raises(ParamsError, match="'b' has 60 images"):
        assign(labels, groups, counts={"val": 40, "test": 30})


def test_folds_balanced_and_group_safe() -> None:
    labels = [f"c{i % 3}" for i in range(600)]
    groups = [f"{labels[i]}-{(i // 3) % 70}" for i in range(600)]
    out = folds(labels, groups, 5, seed=2)
    assert set(out) == set(range(5))
    seen: dict[str, int] = {}
    for grp, f in zip(groups, out, strict=True):
        assert seen.setdefault(grp, f) == f
    per_group = _group_labels(labels, groups)
    per = Counter(zip(labels, out, strict=True))
    for c in set(labels):
        g_c = max(counts[c] for counts in per_group.values())
        sizes = [per[c, f] for f in range(5)]
        assert max(sizes) - min(sizes) <= g_c
    with pytest.raises(ParamsError, match="folds"):
        folds(labels, groups, 1)


def test_carry_over_reports_merges() -> None:
    groups = ["a", "a", "b", "c", "c", "c", "d"]
    old = ["train", "train", "test", "train", "test", None, None]
    carry = carry_over(groups, old, ["train", "val", "test"])
    assert carry.previous == {"a": "train", "b": "test", "c": "test"}
    assert carry.merges == {"c": ("train", "test")}
    out = assign(["x"] * 7, groups, ratios={"train": 0.5, "test": 0.5}, previous=carry.previous, tiny_classes="train")
    assert out[:6] == ["train", "train", "test", "test", "test", "test"]


# ----------------------------------------------------------------------------- issue 13 (B12)


@pytest.mark.parametrize("ratios, key", [({"train": 0.8, "validation": 0.1, "test": 0.1}, "validation"),
                                         ({"train": 0.9, "Val": 0.1}, "Val")])
def test_unknown_split_names_are_refused(ratios: dict[str, float], key: str) -> None:  # B12, CFG-04
    """train and evaluate read `val`: a `validation` split would be written and never used."""
    with pytest.raises(ParamsError, match="split.ratios") as info:
        validate_ratios(ratios)
    assert f"unknown split {key!r} (did you mean val?)" in str(info.value)
    assert "allowed: train, val, test" in str(info.value)
    with pytest.raises(ParamsError, match=f"unknown split {key!r}"):
        plan(["a"] * 10, [str(i) for i in range(10)], counts={key: 1, "test": 1})


@pytest.mark.parametrize("section", [{"ratios": {"train": 0.8, "validation": 0.1, "test": 0.1}},
                                     {"counts": {"validation": 2, "test": 2}}])
def test_unknown_split_names_fail_when_params_load(section: dict) -> None:  # B12: before any manifest is read
    from datakit.params import parse_params

    with pytest.raises(ParamsError) as info:
        parse_params({"split": section}, "p.yaml")
    msg = str(info.value)
    assert msg.startswith(f"p.yaml: split.{next(iter(section))}: unknown split 'validation' (did you mean val?)")
    assert "Value error" not in msg


# ----------------------------------------------------------------------------- the stage (issue 14)


def _stage_manifest(n: int = 40) -> object:
    import pandas as pd

    rows = [{"image_id": f"{i:04d}", "path": f"data/raw/{i:04d}.jpg", "label": "ab"[i % 2], "dup_group": f"g{i // 2}",
             "keep": True} for i in range(n)]
    rows[1]["keep"] = None  # a decision no stage made is not a yes: not counted, takes its group's split
    rows[2]["keep"] = rows[3]["keep"] = False  # a group with no kept member gets no split
    return pd.DataFrame(rows)


def test_split_run_is_a_stage(tmp_path: Path) -> None:
    from datakit.params import SplitParams
    from datakit.split import run
    from datakit.stage import StageContext

    df = _stage_manifest()
    result = run(df, SplitParams(seed=3), StageContext(root=tmp_path))
    out = result.manifest
    assert result.failures is None and result.report["split_images"] == 40 - 3 == result.report["images"] - 3
    assert out.loc[1, "split"] == out.loc[0, "split"] and out.loc[2:3, "split"].isna().all()
    assert (out.groupby("split_group")["split"].nunique(dropna=True) <= 1).all()
    assert out.loc[out["keep"].eq(True), "split"].notna().all()


def test_split_previous_is_read_as_a_split_folder(tmp_path: Path) -> None:
    from datakit.errors import ManifestError
    from datakit.manifest import write_stage_manifest
    from datakit.params import SplitParams
    from datakit.split import run
    from datakit.stage import StageContext

    df = _stage_manifest()
    first = run(df, SplitParams(seed=3), StageContext(root=tmp_path)).manifest
    write_stage_manifest(first, tmp_path / "v1" / "manifest.parquet", tmp_path, stage="split")
    again = run(df, SplitParams(seed=99), StageContext(root=tmp_path), previous=tmp_path / "v1")
    assert again.manifest["split"].equals(first["split"]) and again.report["moved_from_previous"] == 0
    write_stage_manifest(df, tmp_path / "dedup" / "manifest.parquet", tmp_path, stage="dedup")
    with pytest.raises(ManifestError, match=r"has no train/val/test split .*run `datakit split"):
        run(df, SplitParams(), StageContext(root=tmp_path), previous=tmp_path / "dedup")
