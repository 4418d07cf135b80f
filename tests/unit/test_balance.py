"""datakit balance: targets normalised early, train-only resampling, rows marked never dropped."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datakit.augment import AugmentParams, variant_maker
from datakit.balance import BalanceParams, class_weights, normalise_target, parse_balance, run
from datakit.errors import ManifestError, ParamsError
from datakit.images import ImageStore
from datakit.manifest import relpath
from datakit.stage import StageContext

TRAIN = {"a": 12, "b": 4, "c": 2}
OTHER = [("val", "a"), ("val", "b"), ("val", "c"), ("test", "a"), ("test", "c")]


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = np.zeros((40, 48, 3), np.uint8)
    img[:, :24] = rng.integers(0, 255, 3)
    img[12:, :] += rng.integers(0, 60, (28, 48, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


def _manifest(root: Path) -> pd.DataFrame:
    store = ImageStore(root / "data" / "raw")
    plan = [("train", label) for label, n in TRAIN.items() for _ in range(n)] + OTHER
    rows = []
    for i, (split, label) in enumerate(plan):
        data = _png(i)
        image_id, rel = store.put(data, "png")
        rows.append(
            {
                "image_id": image_id,
                "path": relpath(root, store.folder / rel),
                "label": label,
                "width": 48,
                "height": 40,
                "format": "PNG",
                "bytes": len(data),
                "dhash": f"{i:064x}",
                "dup_group": f"g{i}",
                "split_group": f"g{i}",
                "keep": True,
                "split": split,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    return tmp_path, _manifest(tmp_path)


def _balance(root: Path, df: pd.DataFrame, params: BalanceParams, *, out: str | None = "data/balanced",
             augment: AugmentParams | None = None, vectors=None):
    """The stage with the augment pipeline as its variant maker (as the CLI builds it): (manifest, report)."""
    ctx = StageContext(root=root, out=root / out if out else None)
    result = run(df, params, ctx, make_variant=variant_maker(augment or AugmentParams()), vectors=vectors)
    return result.manifest, result.report


def _run(root: Path, df: pd.DataFrame, **kw):
    augment = kw.pop("augment", None)
    return _balance(root, df, BalanceParams(**kw), augment=augment)


def _non_train_unchanged(before: pd.DataFrame, after: pd.DataFrame) -> None:
    cols = list(before.columns)
    b = before[before["split"] != "train"].reset_index(drop=True)
    a = after[after["split"] != "train"][cols].reset_index(drop=True)
    # values, not dtypes: a smote row's null width turns int64 into the nullable Int64
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


def _originals_kept(before: pd.DataFrame, after: pd.DataFrame) -> None:
    assert set(before["image_id"]) <= set(after["image_id"])


# ---- params and targets -------------------------------------------------------------------


def test_parse_defaults_and_errors_name_the_key() -> None:
    p = parse_balance(None)
    assert p.strategy == "class_weights" and p.target == "auto"
    assert parse_balance({"target": 0.5}).target == 0.5
    assert parse_balance({"target": 8}).target == 8 and isinstance(parse_balance({"target": 8}).target, int)
    assert parse_balance({"target": {"b": 8}}).target == {"b": 8}
    with pytest.raises(ParamsError, match=r"balance\.strategy"):
        parse_balance({"strategy": "smoke"})
    with pytest.raises(ParamsError, match=r"balance\.colour: unknown key"):
        parse_balance({"colour": 1})
    with pytest.raises(ParamsError, match=r"balance\.target"):
        parse_balance({"target": 1.5})
    with pytest.raises(ParamsError, match=r"balance\.target"):
        parse_balance({"target": ["a"]})


def test_target_forms_normalised_to_final_counts() -> None:
    assert normalise_target("auto", TRAIN, "over") == {"a": 12, "b": 12, "c": 12}
    assert normalise_target("minority", TRAIN, "over") == {"a": 12, "b": 4, "c": 12}
    assert normalise_target("auto", TRAIN, "under") == {"a": 2, "b": 2, "c": 2}
    assert normalise_target("not minority", TRAIN, "under") == {"a": 2, "b": 2, "c": 2}
    assert normalise_target({"b": 8}, TRAIN, "over") == {"a": 12, "b": 8, "c": 2}
    assert normalise_target({"a": 6}, TRAIN, "under") == {"a": 6, "b": 4, "c": 2}
    # ratio: binary straight through imblearn, multi-class generalised the same way
    assert normalise_target(0.5, {"a": 12, "b": 4}, "over") == {"a": 12, "b": 6}
    assert normalise_target(0.5, {"a": 12, "b": 4}, "under") == {"a": 8, "b": 4}
    assert normalise_target(0.5, TRAIN, "over") == {"a": 12, "b": 6, "c": 6}
    assert normalise_target(0.5, TRAIN, "under") == {"a": 4, "b": 4, "c": 2}
    assert normalise_target(5, TRAIN, "over") == {"a": 12, "b": 5, "c": 5}
    assert normalise_target(5, TRAIN, "under") == {"a": 5, "b": 4, "c": 2}


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("bogus", "over"),
        ("majority", "over"),
        ("minority", "under"),
        ({"b": 2}, "over"),  # fewer than it has: not an over-sampling target
        ({"b": 8}, "under"),  # more than it has
        ({"zebra": 3}, "over"),
        (1.5, "over"),
        (0, "under"),
    ],
)
def test_bad_target_names_balance_target(target, kind) -> None:
    with pytest.raises(ParamsError, match=r"balance\.target.*") as info:
        normalise_target(target, TRAIN, kind)
    assert "balance.target" in str(info.value)


def test_bad_target_in_run_is_params_error(project) -> None:
    root, df = project
    with pytest.raises(ParamsError, match=r"balance\.target"):
        _run(root, df, strategy="oversample", target={"b": 1})


def test_smote_without_embeddings_says_run_embed(project) -> None:
    root, df = project
    with pytest.raises(ParamsError, match=r"balance\.strategy smote interpolates embeddings: run `datakit embed`"):
        _run(root, df, strategy="smote")


def _vectors(df: pd.DataFrame, dim: int = 8) -> tuple[list[str], np.ndarray]:
    """Per-class clusters: label offset + small noise, one vector per image."""
    rng = np.random.default_rng(7)
    centre = {label: rng.normal(0, 1, dim) * 10 for label in sorted(df["label"].unique())}
    X = np.stack([centre[label] + rng.normal(0, 0.1, dim) for label in df["label"]]).astype(np.float32)
    return df["image_id"].astype(str).tolist(), X


def test_smote_on_embeddings_adds_vectors_between_same_class_parents(project) -> None:
    root, df = project
    ids, X = _vectors(df)
    # no output folder: nothing is written at all (with one, only the side files: see below)
    result = run(df, BalanceParams(strategy="smote", k_neighbors=3), StageContext(root=root), vectors=(ids, X))
    out, report, new_vectors = result.manifest, result.report, result.extra["new_vectors"]
    _originals_kept(df, out)
    _non_train_unchanged(df, out)
    assert report["counts_after"] == {"a": 12, "b": 12, "c": 12}
    new = out[out["origin"] == "smote"]
    assert len(new) == 18 and set(new["image_id"]) == set(new_vectors)
    assert new["path"].isna().all() and (new["split"] == "train").all()
    assert not (root / "data" / "balanced").exists() or not any((root / "data" / "balanced").rglob("*.*"))
    pos = {iid: i for i, iid in enumerate(ids)}
    labels = df.set_index("image_id")["label"]
    for row in new.itertuples():
        a, b = row.parent_ids
        assert a != b and labels[a] == labels[b] == row.label
        v, va, vb = new_vectors[row.image_id], X[pos[a]], X[pos[b]]
        gap = json.loads(row.augment_params)["gap"]
        np.testing.assert_allclose(v, va + gap * (vb - va), rtol=1e-5, atol=1e-5)
    assert "linear probe" in report["note"]


def test_smote_on_embeddings_names_images_without_a_vector(project) -> None:
    root, df = project
    ids, X = _vectors(df)
    with pytest.raises(ManifestError, match=r"have no embedding .*datakit embed"):
        run(df, BalanceParams(strategy="smote"), StageContext(root=root, out=root / "b"), vectors=(ids[3:], X[3:]))


# ---- strategies ---------------------------------------------------------------------------


def test_class_weights_change_no_row(project) -> None:
    root, df = project
    out, report = _run(root, df)
    assert len(out) == len(df)
    pd.testing.assert_frame_equal(out[list(df.columns)], df)
    w = report["class_weights"]
    assert w == pytest.approx({"a": 18 / (3 * 12), "b": 18 / (3 * 4), "c": 18 / (3 * 2)})
    assert report["counts_before"] == report["counts_after"] == TRAIN
    assert report["imbalance_before"] == 6.0 and report["rows_added"] == {}
    assert class_weights({"x": 1, "y": 3}) == pytest.approx({"x": 2.0, "y": 2 / 3})


def test_oversample_reaches_target_with_distinct_copies(project) -> None:
    root, df = project
    out, report = _run(root, df, strategy="oversample", target="auto", seed=3)
    _originals_kept(df, out)
    _non_train_unchanged(df, out)
    new = out[out["origin"] == "oversampled"]
    assert len(new) == (12 - 4) + (12 - 2)
    assert report["counts_after"] == {"a": 12, "b": 12, "c": 12}
    assert report["imbalance_after"] == 1.0 and report["rows_added"] == {"oversampled": 18}
    assert new["image_id"].is_unique and not set(new["image_id"]) & set(df["image_id"])
    by_id = df.set_index("image_id")
    blobs = set()
    for row in new.itertuples():
        (parent,) = row.parent_ids
        assert by_id.loc[parent, "label"] == row.label
        assert by_id.loc[parent, "split_group"] == row.split_group and row.split == "train"
        data = (root / row.path).read_bytes()
        assert data != (root / by_id.loc[parent, "path"]).read_bytes()
        blobs.add(data)
        assert json.loads(row.augment_params)["strategy"] == "oversample"
    assert len(blobs) == len(new)  # copies of one parent differ too
    # the same params give the same files
    again, _ = _run(root, df, strategy="oversample", target="auto", seed=3)
    assert list(again["image_id"]) == list(out["image_id"])


def test_oversample_dict_target_and_rerun_is_idempotent(project) -> None:
    root, df = project
    out, report = _run(root, df, strategy="oversample", target={"c": 5})
    assert report["counts_after"] == {"a": 12, "b": 4, "c": 5}
    # balancing a balanced manifest regenerates rather than stacks
    again, report2 = _balance(root, out, BalanceParams(strategy="oversample", target={"c": 5}))
    assert report2["counts_before"] == TRAIN and len(again) == len(out)


def test_oversample_needs_transforms(project) -> None:
    root, df = project
    with pytest.raises(ParamsError, match="oversample needs an augment pipeline"):
        _run(root, df, strategy="oversample", augment=AugmentParams(preset="none"))


def test_undersample_marks_never_drops(project) -> None:
    root, df = project
    out, report = _run(root, df, strategy="undersample", target="auto")
    assert len(out) == len(df) and list(out["image_id"]) == list(df["image_id"])
    _non_train_unchanged(df, out)
    marked = out[out["keep"] == False]  # noqa: E712
    assert len(marked) == (12 - 2) + (4 - 2) == report["rows_undersampled"]
    assert (marked["balance_reason"] == "undersampled").all() and (marked["split"] == "train").all()
    assert report["counts_after"] == {"a": 2, "b": 2, "c": 2}
    # re-running restores the marks first, so it is idempotent
    again, report2 = _balance(root, out, BalanceParams(strategy="undersample"), out="x")
    assert report2["counts_before"] == TRAIN
    pd.testing.assert_frame_equal(again, out)


def test_counts_are_the_rows_training_uses(project) -> None:
    # issue 14: the trainer learns from every kept train row, augment's variants included, so
    # those are what balance counts; the originals it makes new rows from are reported beside.
    root, df = project
    extra = df[df["label"] == "c"].head(1).copy()
    extra["image_id"] = "f" * 64
    extra["origin"] = "augmented"
    mixed = pd.concat([df.assign(origin="original"), extra], ignore_index=True)
    _, report = _run(root, mixed, strategy="class_weights")
    assert report["originals_before"] == TRAIN
    assert report["counts_before"] == {**TRAIN, "c": 3} and report["counts"].startswith("rows training uses")


def test_smote_pixels_rows_have_two_parents(project) -> None:
    root, df = project
    out, report = _run(root, df, strategy="smote_pixels", target=0.5, pixels_size=16, k_neighbors=3)
    _originals_kept(df, out)
    _non_train_unchanged(df, out)
    new = out[out["origin"] == "smote_pixels"]
    assert report["counts_after"] == {"a": 12, "b": 6, "c": 6}
    assert len(new) == 6 and report["rows_added"] == {"smote_pixels": 6}
    labels = df.set_index("image_id")["label"]
    for row in new.itertuples():
        a, b = row.parent_ids
        assert a != b and labels[a] == labels[b] == row.label
        with Image.open(root / row.path) as im:
            assert im.size == (16, 16) and im.format == "PNG"
    assert "ghost" in report["note"]


@pytest.mark.parametrize("strategy", ["none", "class_weights", "oversample", "undersample", "smote_pixels", "smote"])
def test_val_test_untouched_every_strategy(project, strategy) -> None:
    root, df = project
    out, _ = _balance(root, df, BalanceParams(strategy=strategy, pixels_size=8), vectors=_vectors(df))
    _non_train_unchanged(df, out)
    _originals_kept(df, out)
    assert (out.loc[out["origin"] != "original", "split"] == "train").all()


# ---- issue 14: what training sees, failures rows, no stage imports ---------------------------


def _with_variants(root: Path, df: pd.DataFrame, per_class: dict[str, int]) -> pd.DataFrame:
    """`df` after an augment run that made uneven variants per class (as a demo's did)."""
    store = ImageStore(root / "data" / "augment")
    rows = []
    originals = df[df["split"] == "train"]
    for r in originals.itertuples():
        for k in range(per_class.get(r.label, 0)):
            data = _png(10_000 + 10 * r.Index + k)
            image_id, rel = store.put(data, "png")
            rows.append({**r._asdict(), "image_id": image_id, "path": relpath(root, store.folder / rel), "bytes": len(data),
                         "dhash": None, "origin": "augmented", "parent_ids": [r.image_id]})
    for row in rows:
        row.pop("Index")
    base = df.assign(origin="original", parent_ids=[[] for _ in range(len(df))])
    return pd.concat([base, pd.DataFrame(rows)], ignore_index=True)


def _training_counts(df: pd.DataFrame) -> dict[str, int]:
    from datakit.stage import training_rows

    return df.loc[training_rows(df), "label"].value_counts().sort_index().to_dict()


def test_oversample_evens_out_the_rows_training_uses(project) -> None:
    # a: 12 originals + 24 variants, b: 4 + 0, c: 2 + 2. Counting originals only (the old rule)
    # left training with a 36, b 12, c 14 rows.
    root, df = project
    mixed = _with_variants(root, df, {"a": 2, "c": 1})
    assert _training_counts(mixed) == {"a": 36, "b": 4, "c": 4}
    out, report = _run(root, mixed, strategy="oversample", target="auto", seed=2)
    assert _training_counts(out) == {"a": 36, "b": 36, "c": 36} == report["counts_after"]
    assert report["counts_before"] == {"a": 36, "b": 4, "c": 4} and report["originals_before"] == TRAIN
    assert report["rows_added"] == {"oversampled": 64} and report["imbalance_after"] == 1.0
    # copies are made from originals, never from a variant
    originals = set(df["image_id"])
    new = out[out["origin"] == "oversampled"]
    assert all(p[0] in originals for p in new["parent_ids"])
    _non_train_unchanged(mixed, out)


def test_smote_pixels_evens_out_the_rows_training_uses(project) -> None:
    root, df = project
    mixed = _with_variants(root, df, {"a": 1})
    out, report = _run(root, mixed, strategy="smote_pixels", target="auto", pixels_size=8, k_neighbors=1)
    assert _training_counts(out) == {"a": 24, "b": 24, "c": 24} == report["counts_after"]


def test_undersample_brings_training_rows_to_target_variants_first_and_records_failures(project) -> None:
    from datakit.stage import run_stage

    root, df = project
    mixed = _with_variants(root, df, {"a": 2, "c": 1})
    ctx_out = root / "data" / "balance"
    result = run_stage("balance", run, None, ctx_out, BalanceParams(strategy="undersample", target="auto", seed=4),
                       manifest=mixed, root=root, report=root / "balance.json")
    out, report = result.manifest, result.report
    assert _training_counts(out) == {"a": 4, "b": 4, "c": 4} == report["counts_after"]
    marked = out[out["balance_reason"] == "undersampled"]
    assert len(marked) == 32 == report["rows_undersampled"]
    # a's 24 variants go before any of its originals (8 of 12 then), c needs nothing dropped
    assert (marked["origin"] == "augmented").sum() == 24 and (marked["origin"] == "original").sum() == 8
    assert set(marked["label"]) == {"a"}
    failed = pd.read_parquet(ctx_out / "failures.parquet")
    assert sorted(failed["image_id"]) == sorted(marked["image_id"])
    assert set(failed["reason"]) == {"undersampled"} and set(failed["stage"]) == {"balance"}
    assert failed["detail"].str.contains("36 training rows brought down to the target 4").all()
    assert json.loads((root / "balance.json").read_text())["failures_by_reason"] == {"undersampled": 32}


def test_unreadable_parent_is_a_failures_row(project) -> None:
    root, df = project
    gone = df[(df["label"] == "c") & (df["split"] == "train")].iloc[0]
    (root / gone["path"]).unlink()
    ctx = StageContext(root=root, out=root / "data" / "balanced")
    result = run(df, BalanceParams(strategy="oversample", seed=1), ctx, make_variant=variant_maker(AugmentParams()))
    f = result.failures
    assert f.loc[f["image_id"] == gone["image_id"], "reason"].tolist() == ["missing_file"]
    assert result.report["failures_by_reason"] == {"missing_file": 1}
    assert not any(gone["image_id"] in p for p in result.manifest["parent_ids"])


def test_input_without_a_split_is_one_clear_error(project) -> None:
    root, df = project
    with pytest.raises(ManifestError, match=r"has no train/val/test split \(no split column\): run `datakit split"):
        _run(root, df.drop(columns=["split"]))


def test_side_files_and_vectors_carried_forward(project) -> None:
    from datakit.vectors import read_embeddings

    root, df = project
    ids, X = _vectors(df)
    out, report = _balance(root, df, BalanceParams(strategy="smote", k_neighbors=3), vectors=(ids, X))
    folder = root / "data" / "balanced"
    written = {p.name for p in folder.rglob("*") if p.is_file()}
    assert written == {"class_weights.json", "report.html", "embeddings.parquet", "embed.json"}  # no image
    got, Y, meta = read_embeddings(folder)
    assert set(got) == set(out["image_id"]) and meta["synthetic_rows"] == 18 and Y.shape == (len(out), 8)
    assert json.loads((folder / "class_weights.json").read_text()) == pytest.approx(report["class_weights"])


def test_balance_imports_neither_augment_nor_embed() -> None:
    import subprocess
    import sys

    code = ("import sys, datakit.balance, datakit.balance.page, datakit.balance.smote; "
            "print(sorted(m for m in sys.modules if m in ('datakit.augment', 'datakit.embed', 'albumentations', 'torch')))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert got.stdout.strip() == "[]"
