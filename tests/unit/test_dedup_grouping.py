"""Grouping: components, kept image, label conflicts (SPL-03, SPL-06)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.dedup.grouping import components, decide


def _ids(n: int) -> list[str]:
    return [f"{i:064x}" for i in range(n)]


def test_chain_lands_in_one_group_whatever_the_order() -> None:  # SPL-03
    roots = components(4, np.array([0, 1]), np.array([1, 2]))
    assert roots[0] == roots[1] == roots[2] != roots[3]


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.integers(2, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=40), st.randoms())))
def test_groups_do_not_depend_on_input_order(args) -> None:
    n, edges, rnd = args
    ids = _ids(n)
    i = np.array([a for a, _ in edges], dtype=np.int64)
    j = np.array([b for _, b in edges], dtype=np.int64)
    base = decide(ids, ["x"] * n, [10] * n, [10] * n, [100 + k for k in range(n)], components(n, i, j))
    perm = list(range(n))
    rnd.shuffle(perm)
    inv = {old: new for new, old in enumerate(perm)}
    ids2 = [ids[p] for p in perm]
    i2 = np.array([inv[a] for a in i.tolist()], dtype=np.int64)
    j2 = np.array([inv[b] for b in j.tolist()], dtype=np.int64)
    shuffled = decide(ids2, ["x"] * n, [10] * n, [10] * n, [100 + p for p in perm], components(n, i2, j2))
    by_id = {ids2[k]: d for k, d in enumerate(shuffled)}
    for k in range(n):
        a, b = base[k], by_id[ids[k]]
        assert (a.group, a.keep, a.dup_of) == (b.group, b.keep, b.dup_of)


def test_keep_policies() -> None:
    ids = _ids(3)
    roots = components(3, np.array([0, 1]), np.array([1, 2]))
    largest = decide(ids, ["a"] * 3, [10, 30, 20], [10, 30, 20], [5, 5, 5], roots, keep="largest")
    assert [d.keep for d in largest] == [False, True, False] and largest[0].dup_of == ids[1]
    first = decide(ids, ["a"] * 3, [10, 30, 20], [10, 30, 20], [5, 5, 5], roots, keep="first")
    assert [d.keep for d in first] == [True, False, False]
    assert all(d.group == ids[0] for d in first)


def test_conflict_policies() -> None:  # SPL-06
    ids = _ids(4)
    roots = components(4, np.array([0, 1, 2]), np.array([1, 2, 3]))
    labels = ["cat", "cat", "cat", "dog"]
    dropped = decide(ids, labels, [1] * 4, [1] * 4, [1] * 4, roots)
    assert not any(d.keep for d in dropped) and all(d.label_conflict and d.conflict_labels == "cat|dog" for d in dropped)
    major = decide(ids, labels, [1] * 4, [1] * 4, [1] * 4, roots, conflicts="keep_majority")
    assert sum(d.keep for d in major) == 1 and major[3].reason == "label_conflict_minority"
    everyone = decide(ids, labels, [1] * 4, [1] * 4, [1] * 4, roots, conflicts="keep_all")
    assert sum(d.keep for d in everyone) == 2 and len({d.group for d in everyone}) == 1  # still one split group
    tie = decide(ids[:2], ["cat", "dog"], [1, 1], [1, 1], [1, 1], components(2, np.array([0]), np.array([1])),
                 conflicts="keep_majority")
    assert not any(d.keep for d in tie)


def test_extra_labels_make_a_conflict() -> None:
    d = decide(_ids(1), ["cat"], [1], [1], [1], components(1, np.array([], dtype=np.int64), np.array([], dtype=np.int64)),
               extra_labels={0: {"dog"}})
    assert d[0].label_conflict and not d[0].keep
