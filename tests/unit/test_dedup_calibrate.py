"""`datakit dedup calibrate` (datakit.dedup.calibrate): realistic edits, look-alike negatives,
figures per signal and the recommended thresholds."""

from __future__ import annotations

import io
import random

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datakit.dedup import calibrate as C
from datakit.errors import DatakitError
from datakit.params import DedupParams
from tests.fixtures.images import shelf_scene


def _jpeg(im: Image.Image, q: int = 92) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def test_edits_are_the_web_edits_they_name() -> None:
    im = shelf_scene(1)
    rng = random.Random(0)
    for _ in range(20):
        for name in ("crop_sym", "crop_one"):
            data, suffix, cropped = C.edit(im, name, rng)
            w, h = Image.open(io.BytesIO(data)).size
            assert suffix == "jpg" and cropped
            assert 0.035 <= 1 - w / 360 <= 0.165 and 0.035 <= 1 - h / 270 <= 0.165
        data, suffix, cropped = C.edit(im, "resize", rng)
        w, _ = Image.open(io.BytesIO(data)).size
        assert 0.5 * 360 - 1 <= w <= 0.9 * 360 + 1 and not cropped
        data, suffix, _ = C.edit(im, "png", rng)
        assert suffix == "png" and data.startswith(b"\x89PNG")
        data, _, _ = C.edit(im, "stack", rng)
        w, h = Image.open(io.BytesIO(data)).size
        assert w >= 0.84 * 0.84 * 0.5 * 360 and h >= 0.84 * 0.84 * 0.5 * 270  # never two crops on one copy


def _scene_pairs(tmp_path, scenes=(1, 2, 3), look_alikes=(7, 8)) -> C.PairSet:
    """Originals of shelf scenes, every edit of each, and the same backdrop with other things on
    it (look-alikes) plus another scene (unrelated)."""
    ps = C.PairSet()
    rng = random.Random(0)
    for s in scenes:
        im = shelf_scene(s)
        orig = tmp_path / f"s{s}.jpg"
        orig.write_bytes(_jpeg(im))
        me = ps.picture(orig, f"s{s}")
        for name in C.EDITS:
            data, suffix, cropped = C.edit(im, name, rng)
            p = tmp_path / f"s{s}-{name}.{suffix}"
            p.write_bytes(data)
            ps.add(me, ps.picture(p, None), True, name, cropped)
        for o in look_alikes:
            p = tmp_path / f"s{s}-other{o}.jpg"
            p.write_bytes(_jpeg(shelf_scene(s, objects=100 * s + o)))
            ps.add(me, ps.picture(p, f"s{s}o{o}"), False, C.LOOK_ALIKE)
    ps.add(0, ps.picture(tmp_path / f"s{scenes[1]}.jpg", f"s{scenes[1]}"), False, C.UNRELATED)
    return ps


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> pd.DataFrame:
    return C.measure(_scene_pairs(tmp_path_factory.mktemp("cal")), workers=1)


def test_the_recommended_match_threshold_separates_copies_from_look_alikes(measured) -> None:
    cal = C.summarise(measured, DedupParams())
    t = cal.recommended["match_threshold"]
    look = measured.loc[measured["kind"] == C.LOOK_ALIKE, "score"]
    copies = measured.loc[measured["duplicate"], "score"]
    assert t is not None and look.max() < t <= 0.99
    assert cal.recommended["match_recall"] == pytest.approx((copies >= t).mean()) and cal.recommended["match_recall"] >= 0.9
    assert cal.recommended["match_precision"] == 1.0
    # the whole rule at the recommended params keeps precision against the look-alikes
    assert cal.end_to_end["recommended"]["precision_look_alikes"] == 1.0
    assert cal.end_to_end["recommended"]["false_look_alikes"] == 0


def test_recall_per_edit_is_reported_for_every_edit(measured) -> None:
    cal = C.summarise(measured, DedupParams())
    per = cal.per_edit.set_index("edit")
    assert list(per.index) == list(C.EDITS)
    assert (per["pairs"] == 3).all()
    for col in ("dhash<=28", "crops<=24", "overlay>=0.97", "rule (current)", "rule (recommended)"):
        assert per[col].between(0, 1).all(), col
    assert per.loc["jpeg", "dhash<=28"] == 1.0 and per.loc["png", "dhash<=28"] == 1.0
    # dhash alone misses most re-crops; the overlay check sees through them
    assert per.loc[["crop_sym", "crop_one"], "overlay>=0.97"].mean() >= 0.8
    # no vectors here: no embedding table, figures nor recommendation
    assert "embedding" not in cal.tables and cal.recommended["embedding_similarity"] is None
    assert set(cal.tables) == {"dhash", "dhash crops", "overlay"}
    d = cal.to_dict()
    assert d["pairs"]["duplicates"] == 24 and d["pairs"]["look_alikes"] == 6


def _dist(dup_cos, neg_cos=(), dup_score=None, neg_score=None, dup_full=None, crop=None) -> pd.DataFrame:
    n, m = len(dup_cos), len(neg_cos)
    return pd.DataFrame({
        "a_id": "x", "b_id": "y",
        "kind": ["resize"] * n + [C.LOOK_ALIKE] * m,
        "duplicate": [True] * n + [False] * m,
        "crop": list(crop if crop is not None else [False] * n) + [False] * m,
        "full": list(dup_full if dup_full is not None else [0] * n) + [60] * m,
        "crop_distance": 256,
        "cosine": list(dup_cos) + list(neg_cos),
        "score": list(dup_score if dup_score is not None else [1.0] * n) + list(neg_score if neg_score is not None else [0.0] * m),
    })


def test_similarity_floor_is_the_highest_keeping_99_percent_of_copies() -> None:
    cos = np.linspace(0.90, 0.999, 200)
    cos[0], cos[1], cos[2] = 0.5, 0.6, 0.81  # two outliers may be missed (1 % of 200), the third not
    assert C.recommend_similarity(_dist(cos)) == 0.81
    assert C.recommend_similarity(_dist([0.9] * 50)) == 0.9
    assert C.recommend_similarity(_dist([np.nan] * 5)) is None


def test_match_threshold_is_halfway_between_precise_enough_and_the_same_recall() -> None:
    dup = [0.99] * 300 + [0.975] * 100
    neg = [0.96] * 50 + [0.972] * 1 + [0.9] * 50
    d = _dist([1.0] * 400, [0.5] * 101, dup, neg)
    assert C.lowest_precise_match(d) == 0.965  # 1 false pair: precision 0.9975
    t, recall, precision = C.recommend_match(d)
    assert t == 0.97 and recall == 1.0 and precision == pytest.approx(400 / 401)  # halfway to 0.975
    neg = [0.96] * 50 + [0.972] * 5 + [0.9] * 50
    t, recall, precision = C.recommend_match(_dist([1.0] * 400, [0.5] * 105, dup, neg))
    assert t == 0.975 and recall == 1.0 and precision == 1.0  # 5 above 0.97 is too many: no room left
    assert C.recommend_match(_dist([1.0] * 4, [0.5] * 4, [0.5] * 4, [0.99] * 4)) == (None, None, None)
    d = _dist([1.0] * 400, [0.5] * 105, dup, neg)
    assert C.same_recall_ceiling(d, 0.975, 1.0) == 0.975  # the 0.975 copies are lost above it
    assert C.same_recall_ceiling(_dist([1.0] * 3, dup_score=[0.98, 0.99, 1.0]), 0.9, 1.0) == 0.98


def test_radius_is_the_smallest_finding_99_percent_of_uncropped_copies() -> None:
    full = [3] * 95 + [12] * 4 + [20] + [90] * 50
    d = _dist([1.0] * 150, dup_full=full, crop=[False] * 100 + [True] * 50)  # crops do not count
    assert C.recommend_radius(d) == 12
    assert C.recommend_radius(_dist([1.0] * 3, dup_full=[50, 60, 70])) == 0  # unreachable: where recall peaks


def test_the_rule_is_candidates_and_overlay() -> None:
    d = _dist([0.9, 0.5, 0.5], dup_full=[40, 10, 40], dup_score=[0.99, 0.99, 0.99])
    rule = C.Rule(radius=16, crop_radius=None, similarity=0.8, match=0.97)
    assert rule.hits(d).tolist() == [True, True, False]
    assert C.Rule(16, None, None, None).hits(d).tolist() == [False, True, False]
    assert "overlay >= 0.97" in rule.describe() and "cosine >= 0.8" in rule.describe()


def test_current_rule_follows_the_dedup_plan() -> None:
    assert C.current_rule(DedupParams(), vectors=False) == C.Rule(28, 24, None, 0.97)
    assert C.current_rule(DedupParams(), vectors=True) == C.Rule(16, None, 0.75, 0.97)
    assert C.current_rule(DedupParams(threshold=10, verify=False), vectors=True) == C.Rule(10, None, 0.75, None)


def test_look_alikes_that_overlay_perfectly_are_suspects_not_false_pairs() -> None:
    d = _dist([1.0] * 10, [0.5] * 3, [0.99] * 10, [0.995, 0.5, 0.4])
    cal = C.summarise(d, DedupParams())
    assert len(cal.suspects) == 1 and any("left out" in n for n in cal.notes)
    assert (cal.pairs["kind"] == C.LOOK_ALIKE).sum() == 2


def test_nearest_others_by_dhash_and_by_cosine(tmp_path) -> None:
    scenes = {"a": shelf_scene(1), "a2": shelf_scene(1, objects=9), "b": shelf_scene(2), "c": shelf_scene(3)}
    for name, im in scenes.items():
        (tmp_path / f"{name}.jpg").write_bytes(_jpeg(im))
    df = pd.DataFrame({"image_id": list(scenes), "path": [f"{n}.jpg" for n in scenes]})
    near = C.nearest_others(df, tmp_path, np.array([0, 1]), 3, vectors=None, workers=1)
    assert near[0, 0] == 1  # the same backdrop with other things on it
    assert sorted(near[0].tolist()) == [1, 2, 3]
    assert all(r not in row for r, row in zip([0, 1], near.tolist(), strict=True))  # never itself
    X = np.array([[1, 0], [0, 1], [0.9, 0.1], [-1, 0]], dtype=np.float32)
    near = C.nearest_others(df, tmp_path, np.array([0, 3]), 2, vectors=(list(scenes), X))
    assert near.tolist() == [[2, 1], [1, 2]]
    assert C.nearest_others(df, tmp_path, np.array([0, 3]), 2, vectors=(list(scenes), X), block=1).tolist() == near.tolist()
    # rows of the same dup_group are never look-alikes
    grouped = df.assign(dup_group=["g", "g2", "g", "g3"])
    assert C.nearest_others(grouped, tmp_path, np.array([0]), 1, vectors=(list(scenes), X))[0, 0] == 1


def test_too_few_images_and_a_bad_pairs_file_are_clear_errors(tmp_path) -> None:
    df = pd.DataFrame({"image_id": ["a"], "path": ["a.jpg"]})
    with pytest.raises(DatakitError, match="at least 2 images"):
        C.sample_rows(df, 10, 0)
    (tmp_path / "a.jpg").write_bytes(_jpeg(shelf_scene(1)))
    bad = tmp_path / "pairs.csv"
    bad.write_text("a,b,duplicate\na,a.jpg,1\na,missing.jpg,0\n")
    with pytest.raises(DatakitError, match="line 3: 'missing.jpg'"):
        C.read_pairs(bad, df, tmp_path)
    bad.write_text("a,b,duplicate\na,a,maybe\n")
    with pytest.raises(DatakitError, match="line 2: duplicate must be"):
        C.read_pairs(bad, df, tmp_path)
    bad.write_text("a,b\n")
    with pytest.raises(DatakitError, match="missing column"):
        C.read_pairs(bad, df, tmp_path)


def test_the_embedding_signal_is_skipped_with_a_note_when_no_model(tmp_path, monkeypatch) -> None:
    import datakit.embed as E
    from datakit.models import ModelError

    def boom(*a, **k):
        raise ModelError("pretrained weights for efficientnet_lite0 come from the package x, which is not installed")

    monkeypatch.setattr(E, "run", boom)
    p = tmp_path / "x.jpg"
    p.write_bytes(_jpeg(shelf_scene(1)))
    ps = C.PairSet()
    ps.add(ps.picture(p, None), ps.picture(p, None), True, "jpeg")
    from datakit.cli.embedder import make_embedder
    from datakit.params import Params

    # the embedder the command hands in (datakit embed's model) fails: the signal is left out with a note
    vectors, note = C.pair_vectors(ps, None, E.EmbedParams(), tmp_path, make_embedder(Params()))
    assert vectors is None and note.startswith("embedding signal skipped") and "\n" not in note
    assert "efficientnet_lite0" in note
    # no embedder at all (library use): the same, said so
    vectors, note = C.pair_vectors(ps, None, E.EmbedParams(), tmp_path)
    assert vectors is None and note.startswith("embedding signal skipped") and "no model" in note
