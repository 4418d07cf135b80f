"""Curation: the suspects kernel, the decisions file, curate, the review server's API and the
report's review section (the browser loop is tests/e2e/test_curation.py)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

from datakit.curation import decisions as dec
from datakit.curation import scoring
from datakit.curation.curate import run as curate
from datakit.errors import ManifestError
from datakit.stage import StageContext


def _clusters(n_per: int = 60, k: int = 4, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3
    X = np.concatenate([centres[c] + rng.normal(size=(n_per, dim)) for c in range(k)])
    y = np.repeat(np.arange(k), n_per)
    return X, y


def test_planted_wrong_labels_rank_above_the_rest() -> None:
    X, y_true = _clusters()
    rng = np.random.default_rng(1)
    planted = rng.choice(len(y_true), 12, replace=False)
    y = y_true.copy()
    y[planted] = (y[planted] + 1 + rng.integers(0, 3, len(planted))) % 4
    res = scoring.score(X, y, 4, np.arange(len(y)))
    top = set(np.argsort(-res.score)[:12])
    assert top == set(planted)
    assert set(np.flatnonzero(res.flagged)) >= set(planted) and res.flagged.sum() <= 14
    assert (res.suggested[planted] == y_true[planted]).all()
    assert abs(np.nansum(res.noise_by_label * np.bincount(y, minlength=4)) / len(y) - 12 / len(y)) < 0.03
    assert {res.reason[i] for i in planted} == {scoring.LIKELY_MISLABEL}


def test_clean_labels_flag_nothing() -> None:
    X, y = _clusters(seed=2)
    res = scoring.score(X, y, 4, np.arange(len(y)))
    assert res.flagged.sum() == 0 and np.nanmax(res.noise_by_label) < 0.02


def test_duplicate_groups_share_a_fold_and_are_not_each_others_neighbours() -> None:
    X, y = _clusters(n_per=20, seed=3)
    groups = np.arange(len(y)) // 2  # pairs
    fold = scoring.group_folds(groups, y, 5, 0)
    assert all(fold[2 * g] == fold[2 * g + 1] for g in range(len(y) // 2))
    assert len(set(fold)) == 5
    # an image whose only near copy carries another label: the copy is not evidence against it
    X2 = np.vstack([X, X[:1] + 1e-4])
    y2 = np.append(y, (y[0] + 1) % 4)
    g2 = np.append(np.arange(len(y)), 0)
    near, _ = scoring.neighbour_probs(X2, y2, 4, g2, 5)
    assert near[0].argmax() == y[0]


def test_decisions_file_round_trip_and_bad_rows(tmp_path) -> None:
    path = tmp_path / "review" / "decisions.csv"
    assert dec.read(path) == {}
    decided = {"a": dec.Decision("a", "relabel", "vest", "suspect", "2026-01-01T00:00:00Z"),
               "b": dec.Decision("b", "remove", "hoodie", "", "2026-01-01T00:00:01Z")}
    dec.write(path, decided)
    assert dec.read(path) == decided
    assert path.read_text().splitlines()[0] == ",".join(dec.FIELDS)
    path.write_text("image_id,action,label\nc,delete,x\n")
    with pytest.raises(ManifestError, match=r"decisions.csv: line 2: unknown action 'delete'"):
        dec.read(path)
    path.write_text("image_id,action,label\nc,relabel,\n")
    with pytest.raises(ManifestError, match="line 2: relabel needs a label"):
        dec.read(path)


def test_curate_applies_relabel_remove_accept_and_reports_unknown_ids(tmp_path) -> None:
    df = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "path": ["x/a.jpg", "x/b.jpg", "x/c.jpg", "x/d.jpg"],
                       "label": ["vest", "vest", "hoodie", "hoodie"], "keep": [True, True, True, False]})
    path = tmp_path / "decisions.csv"
    dec.write(path, {"a": dec.Decision("a", "relabel", "hoodie"), "b": dec.Decision("b", "remove", "vest"),
                     "c": dec.Decision("c", "accept", "hoodie"), "zz": dec.Decision("zz", "remove", "vest")})
    res = curate(df, None, StageContext(root=tmp_path), decisions=path)
    m = res.manifest.set_index("image_id")
    assert (m.at["a", "label"], m.at["a", "label_before_review"]) == ("hoodie", "vest")
    assert not m.at["b", "keep"] and m.at["b", "curate_reason"] == "reviewed_remove"
    assert m.at["c", "reviewed"] and m.at["c", "label"] == "hoodie" and not m.at["d", "reviewed"]
    assert res.failures["image_id"].tolist() == ["b"] and res.failures["reason"].tolist() == ["reviewed_remove"]
    rep = res.report
    assert (rep["decisions"], rep["applied"], rep["relabelled"], rep["removed"], rep["accepted"]) == (4, 3, 1, 1, 1)
    assert rep["unknown_image_ids"] == ["zz"] and rep["per_class"]["vest"] == {"removed": 1, "relabelled_from": 1, "relabelled_to": 0}
    assert len(res.manifest) == 4  # every row stays


@pytest.fixture
def server(tmp_path):
    from datakit.curation.review import ReviewData, Server

    data = ReviewData(tmp_path, ["hoodie", "vest"], {
        "suspects": [{"key": "s:a", "kind": "suspect", "images": [{"image_id": "a", "label": "vest"}]}],
        "conflicts": [{"key": "c:g", "kind": "conflict", "images": [{"image_id": "b", "label": "vest"},
                                                                     {"image_id": "c", "label": "hoodie"}]}],
        "duplicates": []}, {"a": "a.jpg", "b": "b.jpg", "c": "c.jpg"},
                      {"a": "vest", "b": "vest", "c": "hoodie"})
    return Server(data, tmp_path / "review" / "decisions.csv")


def test_review_api_decides_undoes_and_refuses_other_origins(server) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from datakit.curation.review import make_app

    async def go() -> None:
        async with TestClient(TestServer(make_app(server), host="127.0.0.1")) as client:
            page = await client.get("/")
            assert page.status == 200 and "datakit review" in await page.text()
            assert "http" not in (await page.text()).split("<script>")[0].lower().replace("http-equiv", "")
            ok = await client.post("/api/decide", json={"image_ids": ["a"], "action": "relabel", "label": "hoodie"})
            assert ok.status == 200
            both = await client.post("/api/decide", json={"image_ids": ["b", "c"], "action": "remove"})
            assert both.status == 200
            saved = dec.read(server.decisions_path)
            assert {k: (v.action, v.label) for k, v in saved.items()} == {
                "a": ("relabel", "hoodie"), "b": ("remove", "vest"), "c": ("remove", "hoodie")}
            assert (await (await client.post("/api/undo", json={})).json())["undone"] == 2
            assert set(dec.read(server.decisions_path)) == {"a"}
            bad = await client.post("/api/decide", json={"image_ids": ["nope"], "action": "accept"})
            assert bad.status == 400
            bad = await client.post("/api/decide", json={"image_ids": ["a"], "action": "relabel", "label": "cat"})
            assert bad.status == 400 and "label" in (await bad.json())["error"]
            evil = await client.post("/api/decide", json={"image_ids": ["a"], "action": "remove"},
                                     headers={"Origin": "http://evil.example"})
            assert evil.status == 403
            rebound = await client.get("/api/state", headers={"Host": "evil.example"})
            assert rebound.status == 403
            form = await client.post("/api/decide", data="image_ids=a&action=remove",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert form.status == 415
            # two tabs deciding at once: both land, the file stays whole
            await asyncio.gather(*(client.post("/api/decide", json={"image_ids": [i], "action": "accept"}) for i in "abc"))
            assert set(dec.read(server.decisions_path)) == {"a", "b", "c"}
            state = await (await client.get("/api/state")).json()
            assert state["keys"] == {"hoodie": "1", "vest": "2"} and set(state["decisions"]) == {"a", "b", "c"}

    asyncio.run(go())


def test_report_shows_what_the_review_changed(tmp_path) -> None:
    from datakit.report.parts import RunFiles
    from datakit.report.review import review_section

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "suspects.json").write_text(json.dumps({
        "scored": 10, "flagged": 2, "ambiguous": 1, "estimated_noise": 0.2, "lines": ["striped vest: ~20% of 10 results look wrong"],
        "noise_by_label": {"vest": {"images": 10, "estimated_noise": 0.2, "flagged": 2}}}))
    (reports / "curate.json").write_text(json.dumps({
        "decisions": 2, "relabelled": 1, "removed": 1, "accepted": 0, "decisions_file": "review/decisions.csv",
        "per_class": {"vest": {"removed": 1, "relabelled_from": 1, "relabelled_to": 0}}}))
    html, figures = review_section(RunFiles({}, reports, tmp_path))
    assert 'id="review"' in html and "striped vest: ~20% of 10 results look wrong" in html
    assert '<td data-col="removed in review">1</td>' in html and figures["curate"]["removed"] == 1 and "before_after" not in figures
    assert review_section(RunFiles({}, tmp_path / "none", tmp_path)) is None
