"""Group-aware stratified splitting (pure: no files, no printing).

`assign` gives each row a split name so that:

* every row gets exactly one split (SPL-01), and every group (for example dedup's `dup_group`)
  lands in a single split (SPL-02); a group whose rows carry several labels is placed as one
  unit and counts for each of its labels (SPL-06);
* class proportions follow the targets, measured in images, within the bound below (SPL-08);
* every class with enough groups appears in every split it has a non-zero target in (SPL-09),
  otherwise a `ParamsError` names the class and its counts (SPL-10) or, with
  `tiny_classes="train"`, the class goes wholly to the first split with a non-zero target;
* the result depends only on the multiset of (label, group) rows and on `seed`: rows are
  grouped, groups are sorted by name and ordered by `sha256(f"{seed}:{group}")`, and no set or
  dict of strings is ever iterated in hash order (SPL-11, SPL-12);
* groups listed in `previous` keep their old split and only new groups are placed (SPL-13).

How it works. First, groups listed in `previous` are fixed. Then, class by class (rarest first,
i.e. fewest groups), the smallest free groups, single-class ones preferred, are put into the
splits that still lack the class (coverage). Then groups that carry several classes, largest
first, each go to the split where the summed relative deficit `(target - count) / n_c` of their
classes is largest. Last, class by class, the remaining single-class groups, largest first, each
go to the split whose image deficit `target - count` for that class is largest.

Tolerance guarantee. Let `t_cs` be the target number of images of class c in split s
(`ratio_s * n_c`, or the fixed count), `g_c` the largest number of c-images in one group, and
`E_c` the *forced excess* of c: the images of c already above target, summed over splits,
at the moment the greedy pass for c starts (placements fixed by `previous`, coverage seeds,
and groups that carry several classes). Then, for every
split s (including splits with a zero target),

    |n_cs - t_cs| <= max(g_c, E_c)        hence   |n_cs / n_c - r_s| <= g_c / n_c + tol_c,

with `tol_c = E_c / n_c`. `E_c` is 0 for a class whose coverage seeds fit inside their
targets and that shares no groups and has no `previous` (the usual case for a big class), so
the bound is then the SPL-08 bound with tol = 0. `E_c` and `g_c` are reported per class by
`plan` so callers can show the bound that applies. Tiny classes placed by the
`tiny_classes="train"` policy are exempt and listed in `SplitPlan.tiny`.

Proof sketch: in the greedy pass the chosen split always has a positive deficit (the deficits sum
to the images still unplaced), so a greedy addition overshoots by less than `g_c` and zero-target
splits never receive greedy groups; a split that receives none ends at most its forced excess
over target. A split's deficit only shrinks, so when another split s' last received a group its
deficit was at least s's final deficit, and s' ends no lower than that minus `g_c`; deficits sum
to zero, so no split ends more than `max(g_c, E_c)` below target.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from datakit.errors import ParamsError

TinyPolicy = Literal["error", "train"]

DEFAULT_RATIOS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
RATIO_SUM_TOLERANCE = 1e-6
# The splits train and evaluate read: any other name would be written and never used.
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitPlan:
    """The outcome of `plan`: the split of every row plus what is needed to judge it.

    Attributes:
        splits: Split name per input row, in input order.
        names: Split names in the caller's order.
        group_split: Split name per group.
        targets: Per class, the target number of images per split (same order as `names`).
        counts: Per class, the number of images placed per split.
        largest_group: Per class, `g_c`: the most images of that class in one group.
        excess: Per class, `E_c`: images above target forced before the greedy pass.
        tiny: Classes placed wholly in one split by `tiny_classes="train"`, sorted.
    """

    splits: list[str]
    names: tuple[str, ...]
    group_split: dict[str, str]
    targets: dict[str, tuple[float, ...]]
    counts: dict[str, tuple[int, ...]]
    largest_group: dict[str, int]
    excess: dict[str, float]
    tiny: tuple[str, ...] = field(default=())

    def bound(self, label: str) -> float:
        """The guaranteed bound `max(g_c, E_c)` on `|n_cs - t_cs|` (images) for one class."""
        return max(float(self.largest_group[label]), self.excess[label])


@dataclass(frozen=True)
class Carry:
    """Previous splits folded onto the current groups (see `carry_over`).

    Attributes:
        previous: Group -> split to pass to `assign(previous=...)`.
        merges: Groups whose old members were in different splits -> those splits (sorted by
            the split order); the caller should report them, since some old image moves.
    """

    previous: dict[str, str]
    merges: dict[str, tuple[str, ...]]


# ----------------------------------------------------------------------------- validation


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def unknown_split_names(names: Iterable[object]) -> list[str]:
    """One line per name that is not a split datakit reads (`validation` -> did you mean val?)."""
    from datakit.params import unknown_key_message

    return [unknown_key_message(name, SPLIT_NAMES, "split") for name in names
            if isinstance(name, str) and name and name not in SPLIT_NAMES]


def validate_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """Split ratios (name -> share of images, e.g. `{"train": 0.8, "val": 0.1, "test": 0.1}`)
    checked (CFG-04) and returned as floats in the caller's order. One ParamsError listing every
    value when a name is empty, not a string or not a split datakit reads, a value is not a
    number, NaN, outside [0, 1], all are zero, or they do not sum to 1 (within 1e-6)."""
    shown = ", ".join(f"{k!r}: {v!r}" for k, v in ratios.items())
    problems: list[str] = unknown_split_names(ratios)
    if not ratios:
        problems.append("no splits given")
    for name, value in ratios.items():
        if not isinstance(name, str) or not name:
            problems.append(f"split name {name!r} must be a non-empty string")
        if not _is_number(value):
            problems.append(f"{name!r} is not a number")
        elif math.isnan(value):
            problems.append(f"{name!r} is NaN")
        elif value < 0 or value > 1:
            problems.append(f"{name!r} = {value!r} is outside [0, 1]")
    if not problems:
        total = math.fsum(float(v) for v in ratios.values())
        if total == 0:
            problems.append("all ratios are zero")
        elif abs(total - 1.0) > RATIO_SUM_TOLERANCE:
            problems.append(f"ratios sum to {total!r}, not 1")
    if problems:
        raise ParamsError(f"split.ratios invalid ({'; '.join(problems)}): got {{{shown}}}")
    return {name: float(value) for name, value in ratios.items()}


def _validate_counts(counts: Mapping[str, int]) -> dict[str, int]:
    shown = ", ".join(f"{k!r}: {v!r}" for k, v in counts.items())
    problems: list[str] = unknown_split_names(counts)
    if not counts:
        problems.append("no splits given")
    for name, value in counts.items():
        if not isinstance(name, str) or not name:
            problems.append(f"split name {name!r} must be a non-empty string")
        elif name == "train":
            problems.append("'train' cannot have a fixed count (it gets the rest)")
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{name!r} = {value!r} is not a non-negative integer")
    if problems:
        raise ParamsError(f"split.counts invalid ({'; '.join(problems)}): got {{{shown}}}")
    return dict(counts)


# ----------------------------------------------------------------------------- the core


def _group_key(seed: int, group: str) -> bytes:
    """Per-group random key: stable across processes and Python versions (no `hash()`)."""
    return hashlib.sha256(f"{seed}:{group}".encode()).digest()


def _solve(
    labels: Sequence[str],
    groups: Sequence[str],
    names: tuple[str, ...],
    targets_of: Callable[[str, int], tuple[float, ...] | None],
    *,
    seed: int,
    previous: Mapping[str, str] | None,
    min_per_split: int,
    tiny_classes: TinyPolicy,
    fallback: Callable[[tuple[float, ...]], int],
    unit: str = "split",
) -> SplitPlan:
    """Shared engine of `plan` and `folds`; `targets_of(label, n)` is None when infeasible."""
    if len(labels) != len(groups):
        raise ParamsError(f"split: {len(labels)} labels but {len(groups)} groups; one of each per row is needed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParamsError(f"split.seed must be an integer, got {seed!r}")
    if isinstance(min_per_split, bool) or not isinstance(min_per_split, int) or min_per_split < 0:
        raise ParamsError(f"split.min_per_split must be a non-negative integer, got {min_per_split!r}")
    if tiny_classes not in ("error", "train"):
        raise ParamsError(f"split.tiny_classes must be 'error' or 'train', got {tiny_classes!r}")
    for i, (lab, grp) in enumerate(zip(labels, groups, strict=True)):
        if not isinstance(lab, str) or not isinstance(grp, str):
            raise ParamsError(f"split: row {i} has label {lab!r} and group {grp!r}; both must be strings")
    index_of = {name: i for i, name in enumerate(names)}
    if previous:
        bad = sorted((g, s) for g, s in previous.items() if s not in index_of)
        if bad:
            shown = ", ".join(f"{g!r} -> {s!r}" for g, s in bad[:10])
            raise ParamsError(f"split.previous names splits not in {list(names)}: {shown}")

    # Groups, sorted by name, with their per-class image counts (sorted by class).
    per_group: dict[str, dict[str, int]] = {}
    for lab, grp in zip(labels, groups, strict=True):
        per_group.setdefault(grp, {})
        per_group[grp][lab] = per_group[grp].get(lab, 0) + 1
    group_names = sorted(per_group)
    members: list[tuple[tuple[str, int], ...]] = [tuple(sorted(per_group[g].items())) for g in group_names]
    keys = [_group_key(seed, g) for g in group_names]

    classes = sorted({lab for row in members for lab, _ in row})
    n_images = {c: 0 for c in classes}
    groups_of: dict[str, list[int]] = {c: [] for c in classes}
    largest = {c: 0 for c in classes}
    for gi, row in enumerate(members):
        for lab, n in row:
            n_images[lab] += n
            groups_of[lab].append(gi)
            largest[lab] = max(largest[lab], n)
    order = sorted(classes, key=lambda c: (len(groups_of[c]), n_images[c], c))

    k = len(names)
    cnt = {c: [0] * k for c in classes}
    grp_cnt = {c: [0] * k for c in classes}
    where: list[int | None] = [None] * len(group_names)

    def place(gi: int, s: int) -> None:
        where[gi] = s
        for lab, n in members[gi]:
            cnt[lab][s] += n
            grp_cnt[lab][s] += 1

    # 1. Groups known from an earlier version keep their split (SPL-13).
    if previous:
        for gi, g in enumerate(group_names):
            if g in previous:
                place(gi, index_of[previous[g]])

    # 2. Targets; classes that cannot appear in every split they are meant for (SPL-10).
    targets: dict[str, tuple[float, ...]] = {}
    tiny: list[str] = []
    messages: list[str] = []
    for c in order:
        t = targets_of(c, n_images[c])
        n_active = 0 if t is None else sum(1 for x in t if x > 0)
        needed = n_active * min_per_split
        if t is None or len(groups_of[c]) < needed:
            tiny.append(c)
            if t is None:
                messages.append(f"class {c!r} has {n_images[c]} images, fewer than the fixed counts need")
            else:
                messages.append(
                    f"class {c!r} has {len(groups_of[c])} groups ({n_images[c]} images) but needs {needed} "
                    f"to appear in each of its {n_active} non-empty {unit}s"
                )
        targets[c] = t if t is not None else _placeholder_targets(n_images[c], k)
    if tiny and tiny_classes == "error":
        raise ParamsError("split infeasible: " + "; ".join(messages))
    for c in tiny:
        s = fallback(targets[c])
        tgt = [0.0] * k
        tgt[s] = float(n_images[c])
        targets[c] = tuple(tgt)
        for gi in groups_of[c]:
            if where[gi] is None:
                place(gi, s)
    tiny_set = set(tiny)
    regular = [c for c in order if c not in tiny_set]

    # 3. Coverage: the smallest free groups go to the splits that still lack the class (SPL-09).
    for c in regular:
        t = targets[c]
        slots: list[int] = []
        for s in sorted((s for s in range(k) if t[s] > 0), key=lambda s: (t[s], s)):
            slots.extend([s] * max(0, min_per_split - grp_cnt[c][s]))
        if not slots:
            continue
        # Prefer single-class groups (they use up no other class's candidates), then small ones.
        candidates = sorted(
            (gi for gi in groups_of[c] if where[gi] is None),
            key=lambda gi: (len(members[gi]) > 1, dict(members[gi])[c], keys[gi]),
        )
        if len(candidates) < len(slots):
            if tiny_classes == "error":
                fixed = len(groups_of[c]) - len(candidates)
                raise ParamsError(
                    f"split infeasible: class {c!r} has {len(groups_of[c])} groups ({n_images[c]} images), "
                    f"{fixed} of them already placed (previous version or shared with another class), "
                    f"too few free groups to reach every non-empty {unit}; use tiny_classes='train' to accept"
                )
            slots = slots[: len(candidates)]
        # Smallest seed into the smallest target keeps the forced excess small.
        for s, gi in zip(slots, candidates, strict=False):
            place(gi, s)

    # 4. Groups carrying several classes, largest first, go where their classes' summed relative
    #    deficit is largest; for each class they are forced placements (part of E_c).
    shared = sorted(
        (gi for gi in range(len(members)) if where[gi] is None and len(members[gi]) > 1),
        key=lambda gi: (-sum(n for _, n in members[gi]), keys[gi]),
    )
    for gi in shared:
        row = members[gi]
        s = max(
            range(k),
            key=lambda s: (math.fsum(n * (targets[lab][s] - cnt[lab][s]) / n_images[lab] for lab, n in row), -s),
        )
        place(gi, s)

    # 5. Greedy per class: largest free group first, into the split with the largest image deficit.
    excess: dict[str, float] = {}
    for c in order:
        t = targets[c]
        excess[c] = math.fsum(max(0.0, cnt[c][s] - t[s]) for s in range(k))
        mine = sorted((gi for gi in groups_of[c] if where[gi] is None), key=lambda gi: (-members[gi][0][1], keys[gi]))
        for gi in mine:
            have = cnt[c]
            s = max(range(k), key=lambda s: (t[s] - have[s], t[s], -s))
            place(gi, s)

    group_split = {g: names[s] for g, s in zip(group_names, where, strict=True) if s is not None}
    assert len(group_split) == len(group_names), "every group is placed"
    return SplitPlan(
        splits=[group_split[g] for g in groups],
        names=names,
        group_split=group_split,
        targets=targets,
        counts={c: tuple(cnt[c]) for c in classes},
        largest_group=largest,
        excess=excess,
        tiny=tuple(sorted(tiny)),
    )


def _placeholder_targets(n: int, k: int) -> tuple[float, ...]:
    """Targets for an infeasible class until the tiny-class policy replaces them."""
    return tuple([float(n)] + [0.0] * (k - 1))


def plan(
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    ratios: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
    seed: int = 0,
    previous: Mapping[str, str] | None = None,
    min_per_split: int = 1,
    tiny_classes: TinyPolicy = "error",
) -> SplitPlan:
    """Split rows into named splits, keeping groups whole and classes stratified.

    Same arguments as `assign`; returns the full `SplitPlan` (per-class targets, counts, `g_c`,
    `E_c`, tiny classes) so the caller can report the proportions and the bound that applies.

    Args:
        labels: Class label per row.
        groups: Group key per row (e.g. `dup_group`); rows sharing a key never part.
        ratios: Split name -> share of images; names keep this order. Default 0.8/0.1/0.1
            train/val/test. Zero shares give splits that stay empty (unless `previous` fills them).
        counts: Instead of ratios: split name -> images per class for the non-train splits
            (e.g. `{"val": 20, "test": 20}`); "train" (first) gets the rest of each class.
        seed: Seed of the per-group random order.
        previous: Group -> split from an earlier version; these groups keep that split (even a
            split whose ratio is now 0); groups absent from `groups` are ignored.
        min_per_split: Groups of each class wanted in every split with a non-zero target; a class
            with fewer groups than that in total is infeasible. 0 turns coverage off.
        tiny_classes: "error" raises on infeasible classes; "train" puts such a class wholly in
            the first split with a non-zero target (and accepts coverage shortfalls caused by
            `previous` or shared groups as best effort).

    Returns:
        The plan; `plan(...).splits` is what `assign` returns.

    Raises:
        ParamsError: Invalid ratios/counts/seed/previous, mismatched lengths, or an infeasible
            class under `tiny_classes="error"` (the message names the class and its counts).
    """
    if ratios is not None and counts is not None:
        raise ParamsError("split: give either ratios or counts, not both")
    if counts is not None:
        fixed = _validate_counts(counts)
        names = ("train", *fixed)
        total_fixed = sum(fixed.values())

        def by_count(_label: str, n: int) -> tuple[float, ...] | None:
            if n < total_fixed:
                return None
            return (float(n - total_fixed), *(float(v) for v in fixed.values()))

        return _solve(
            labels, groups, names, by_count, seed=seed, previous=previous, min_per_split=min_per_split,
            tiny_classes=tiny_classes, fallback=lambda _t: 0,
        )
    shares = validate_ratios(DEFAULT_RATIOS if ratios is None else ratios)
    names = tuple(shares)
    values = tuple(shares.values())
    first_active = next(i for i, r in enumerate(values) if r > 0)
    return _solve(
        labels, groups, names, lambda _label, n: tuple(r * n for r in values), seed=seed, previous=previous,
        min_per_split=min_per_split, tiny_classes=tiny_classes, fallback=lambda _t: first_active,
    )


def assign(
    labels: Sequence[str],
    groups: Sequence[str],
    *,
    ratios: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
    seed: int = 0,
    previous: Mapping[str, str] | None = None,
    min_per_split: int = 1,
    tiny_classes: TinyPolicy = "error",
) -> list[str]:
    """Return the split name of every row, in input order: `plan(...).splits`. Same arguments
    as `plan` (and the same ParamsError); same seed and same rows, in any order, give the same
    answer (see the module docstring for the guarantees)."""
    return plan(
        labels, groups, ratios=ratios, counts=counts, seed=seed, previous=previous,
        min_per_split=min_per_split, tiny_classes=tiny_classes,
    ).splits


def folds(labels: Sequence[str], groups: Sequence[str], k: int, seed: int = 0, *, min_per_fold: int = 1) -> list[int]:
    """The fold (0..k-1) of every row, groups whole and classes stratified per fold: each class's
    count in each fold is within `max(g_c, E_c)` images of `n_c / k` (see the module docstring);
    with `E_c = 0` the largest and smallest fold of a class differ by at most `g_c`. A
    ParamsError when `k` < 2 or a class has fewer than `k * min_per_fold` groups (named, with counts).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ParamsError(f"split.folds must be an integer >= 2, got {k!r}")
    names = tuple(str(i) for i in range(k))
    result = _solve(
        labels, groups, names, lambda _label, n: tuple(n / k for _ in range(k)), seed=seed, previous=None,
        min_per_split=min_per_fold, tiny_classes="error", fallback=lambda _t: 0, unit="fold",
    )
    return [int(s) for s in result.splits]


def carry_over(groups: Sequence[str], previous_splits: Sequence[str | None], names: Sequence[str]) -> Carry:
    """Fold an earlier version's per-image splits (`previous_splits`: the old split per row of
    today's `groups`, None or "" for new images) onto today's groups (SPL-13).

    A group takes the split its old members were in; new images take their group's split
    through `assign(previous=...)`. When old members of one group sat in different splits
    (groups merged since), the group takes the split holding most of them, ties going to the
    later split in `names` (held-out splits win), and it is listed in `merges` so the caller
    reports it. A ParamsError when the lengths differ or an old split is not in `names`.
    """
    if len(groups) != len(previous_splits):
        raise ParamsError(f"split: {len(groups)} groups but {len(previous_splits)} previous splits")
    index_of = {name: i for i, name in enumerate(names)}
    tally: dict[str, list[int]] = {}
    for grp, old in zip(groups, previous_splits, strict=True):
        if old is None or old == "":
            continue
        if old not in index_of:
            raise ParamsError(f"split.previous: split {old!r} of group {grp!r} is not one of {list(names)}")
        tally.setdefault(grp, [0] * len(names))[index_of[old]] += 1
    chosen: dict[str, str] = {}
    merges: dict[str, tuple[str, ...]] = {}
    for grp in sorted(tally):
        row = tally[grp]
        best = max(range(len(names)), key=lambda s: (row[s], s))
        chosen[grp] = names[best]
        used = tuple(names[s] for s in range(len(names)) if row[s])
        if len(used) > 1:
            merges[grp] = used
    return Carry(previous=chosen, merges=merges)


# ----------------------------------------------------------------------------- the stage


def split_groups(df: Any, group_by: Sequence[str] = ()) -> list[str]:
    """The group of every row: `dup_group` (or the image itself) joined with every `group_by`
    column, transitively (two rows sharing any key are one group). The id is the smallest
    member `image_id`, so it depends on content, not on row order."""
    import numpy as np

    from datakit.graph import components

    base = df["dup_group"].tolist() if "dup_group" in df.columns else df["image_id"].tolist()
    keys = [[("dup", str(g))] for g in base]
    for col in group_by:
        if col not in df.columns:
            raise ParamsError(f"split.group_by: the manifest has no column {col!r}")
        for r, v in enumerate(df[col].tolist()):
            if v is not None and v == v and str(v) != "":  # skip null / NaN / empty: no tie
                keys[r].append((col, str(v)))
    first: dict[tuple[str, str], int] = {}
    ia: list[int] = []
    ib: list[int] = []
    for r, ks in enumerate(keys):
        for k in ks:
            if k in first:
                ia.append(first[k])
                ib.append(r)
            else:
                first[k] = r
    roots = components(len(df), np.array(ia, dtype=np.int64), np.array(ib, dtype=np.int64)).tolist()
    ids = df["image_id"].tolist()
    smallest: dict[int, str] = {}
    for r, root in enumerate(roots):
        if root not in smallest or ids[r] < smallest[root]:
            smallest[root] = ids[r]
    return [smallest[root] for root in roots]


def read_previous(source: Any) -> Any:
    """An earlier version's split manifest (a split folder or its manifest file): only `image_id`
    and `split` are read, so its images need not exist any more."""
    from datakit.stage import SPLIT, load_input

    return load_input(source, needs=(SPLIT,), check_files=False).manifest


def run(manifest: Any, params: Any, ctx: Any, *, previous: Any | None = None) -> Any:
    """The split stage: adds `split_group`, `split` (and `fold`) to a dedup manifest.

    Rows that are not kept (`stage.kept`) are not counted in the stratification; they take
    their group's split when the group has a kept member (so an audit sees every copy where it
    landed), else no split. `previous` (an earlier version's split manifest, a frame or a folder)
    keeps every old group in its old split (SPL-13); merges of groups from different old
    splits are reported. Nothing is dropped, so there are no failures rows.
    """
    from datakit.stage import StageResult, kept

    if previous is not None and not hasattr(previous, "columns"):
        previous = read_previous(previous)
    out = manifest.reset_index(drop=True).copy()
    groups = split_groups(out, params.group_by)
    out["split_group"] = groups
    is_kept = kept(out).tolist()
    rows = [r for r in range(len(out)) if is_kept[r]]
    names = list(params.counts and ["train", *params.counts] or params.ratios)
    prev_map: dict[str, str] | None = None
    merges: dict[str, tuple[str, ...]] = {}
    old: dict[str, Any] = {}
    if previous is not None:
        if "split" not in previous.columns or "image_id" not in previous.columns:
            raise ParamsError("--previous must be a split manifest (columns image_id and split)")
        old = dict(zip(previous["image_id"], previous["split"], strict=True))
        carry = carry_over(groups, [old.get(i) if isinstance(old.get(i), str) else None for i in out["image_id"]], names)
        prev_map, merges = carry.previous, carry.merges
    result = plan(
        [out["label"].iat[r] for r in rows], [groups[r] for r in rows],
        ratios=None if params.counts else params.ratios, counts=params.counts, seed=params.seed,
        previous=prev_map, tiny_classes=params.tiny_classes,
    )
    split_of_group = {**(prev_map or {}), **result.group_split}
    out["split"] = [split_of_group.get(g) for g in groups]
    if params.folds and params.folds > 1:
        cv = [r for r in rows if out["split"].iat[r] != names[-1]]
        fold_col: list[int | None] = [None] * len(out)
        for r, k in zip(cv, folds([out["label"].iat[r] for r in cv], [groups[r] for r in cv], params.folds, params.seed),
                        strict=True):
            fold_col[r] = k
        out["fold"] = fold_col
    # Moved: had a split in the old version and has another one now (no split before is not a move).
    moved = sum(1 for i, s in zip(out["image_id"], out["split"], strict=True) if isinstance(old.get(i), str) and old[i] != s)
    return StageResult(manifest=out, report=split_report(out[kept(out)], len(out), result, names, merges, moved))


def split_report(k: Any, images: int, result: SplitPlan, names: list[str], merges: dict[str, tuple[str, ...]],
                 moved: int) -> dict[str, Any]:
    """reports/split.json: per class and split the kept images, the bound that applies, group sizes."""
    table: dict[str, dict[str, Any]] = {}
    for label in sorted(set(k["label"])):
        sub = k[k["label"] == label]
        n = len(sub)
        counts = {s: int((sub["split"] == s).sum()) for s in names}
        table[label] = {"n": n, "counts": counts,
                        "proportions": {s: round(c / n, 4) if n else 0.0 for s, c in counts.items()},
                        "bound_images": result.bound(label) if label in result.largest_group else None}
    sizes = k.groupby("split_group").size()
    hist = {str(b): int(v) for b, v in sizes.value_counts().sort_index().items()}
    return {
        "images": int(images), "split_images": int(len(k)),
        "per_split": {s: int((k["split"] == s).sum()) for s in names},
        "per_class": table,
        "groups": int(len(sizes)), "group_sizes": hist, "largest_group": int(sizes.max()) if len(sizes) else 0,
        "tiny_classes": list(result.tiny),
        "previous_merges": {g: list(v) for g, v in sorted(merges.items())}, "moved_from_previous": int(moved),
    }
