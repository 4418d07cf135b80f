"""datakit augment: presets, validation naming the key, seeded byte-identical variants, train only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datakit.augment import (
    FLIPS,
    PRESETS,
    AugmentParams,
    build_pipeline,
    parse_augment,
    resolved_config,
    run,
    variant_seed,
)
from datakit.errors import ParamsError
from datakit.images import ImageStore
from datakit.manifest import relpath
from datakit.stage import StageContext


def _png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.zeros((h, w, 3), np.uint8)
    base[:, : w // 2] = rng.integers(0, 255, 3)
    base[h // 3 :, :] += rng.integers(0, 40, (h - h // 3, w, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(base).save(buf, "PNG")
    return buf.getvalue()


def _manifest(root: Path, sizes: dict[int, tuple[int, int]] | None = None) -> pd.DataFrame:
    """Six images: 3 train (one with keep False), 2 val... in groups, like a split manifest."""
    store = ImageStore(root / "data" / "raw")
    plan = [
        ("train", "cat", "g1", True),
        ("train", "cat", "g1", True),
        ("train", "dog", "g2", True),
        ("train", "dog", "g3", False),
        ("val", "cat", "g4", True),
        ("test", "dog", "g5", True),
    ]
    rows = []
    for i, (split, label, group, keep) in enumerate(plan):
        size = (sizes or {}).get(i, (64, 48))
        data = _png(i, size)
        image_id, rel = store.put(data, "png")
        rows.append(
            {
                "image_id": image_id,
                "path": relpath(root, store.folder / rel),
                "label": label,
                "width": size[0],
                "height": size[1],
                "format": "PNG",
                "bytes": len(data),
                "source_url": f"https://example.org/{i}.png",
                "dhash": f"{i:064x}",
                "dup_group": group,
                "split_group": group,
                "keep": keep,
                "split": split,
            }
        )
    return pd.DataFrame(rows)


def _run(root: Path, df: pd.DataFrame, params: AugmentParams, out: str = "aug", failures=None) -> pd.DataFrame:
    result = run(df, params, StageContext(root=root, out=root / "data" / out))
    if failures is not None:
        failures.extend(result.failures.to_dict("records"))
    return result.manifest


def _variant_bytes(root: Path, result: pd.DataFrame) -> list[bytes]:
    aug = result[result["origin"] == "augmented"]
    return [(root / p).read_bytes() for p in aug["path"]]


# -- params and pipelines ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build(preset: str) -> None:
    pipe = build_pipeline(AugmentParams(preset=preset))
    names = [type(t).__name__ for t in pipe.transforms]
    assert names == [t["name"] for t in PRESETS[preset]]
    json.dumps(resolved_config(AugmentParams(preset=preset)))


def test_no_flip_has_no_flip_and_aerial_has_both() -> None:
    names = {type(t).__name__ for t in build_pipeline(AugmentParams(preset="no-flip")).transforms}
    assert not names & FLIPS
    aerial = {type(t).__name__ for t in build_pipeline(AugmentParams(preset="aerial")).transforms}
    assert {"HorizontalFlip", "VerticalFlip", "RandomRotate90"} <= aerial


def test_training_size_uses_random_resized_crop() -> None:
    pipe = build_pipeline(AugmentParams(), size=(32, 32))
    out = pipe(image=np.zeros((48, 64, 3), np.uint8))["image"]
    assert out.shape == (32, 32, 3)


def test_resolved_config_records_version_and_pipeline() -> None:
    cfg = resolved_config(AugmentParams(transforms=[{"name": "HorizontalFlip", "p": 0.5}], seed=3))
    import albumentations

    assert cfg["albumentations_version"] == albumentations.__version__
    assert cfg["source"] == "transforms"
    assert cfg["params"]["seed"] == 3
    assert cfg["pipeline"]["transform"]["transforms"][0]["__class_fullname__"] == "HorizontalFlip"
    assert json.loads(json.dumps(cfg)) == cfg


@pytest.mark.parametrize(
    ("transforms", "key", "words"),
    [
        ([{"name": "HorizontalFlip"}, {"name": "HorizntalFlip"}], "augment.transforms[1].name", "HorizontalFlip"),
        ([{"name": "Affine", "rotate": "a lot"}], "augment.transforms[0]", "rotate"),
        ([{"name": "Affine", "rotat": 10}], "augment.transforms[0]", "rotat"),
        ([{"name": "HorizontalFlip", "p": 2}], "augment.transforms[0]", "p"),
        ([{"name": "RandomCrop"}], "augment.transforms[0]", "height"),
        ([{"p": 0.5}], "augment.transforms[0].name", "required"),
    ],
)
def test_bad_transform_is_params_error_naming_key(transforms, key: str, words: str) -> None:
    with pytest.raises(ParamsError) as info:
        parse_augment({"transforms": transforms})
    assert key in str(info.value)
    assert words in str(info.value)


def test_other_params_errors_name_the_key() -> None:
    with pytest.raises(ParamsError, match=r"augment\.variants"):
        parse_augment({"variants": 51})
    with pytest.raises(ParamsError, match=r"augment\.preset"):
        parse_augment({"preset": "upside-down"})
    with pytest.raises(ParamsError, match=r"augment\.flips: unknown key"):
        parse_augment({"flips": True})


def test_variant_seed_is_stable() -> None:
    assert variant_seed(0, "abc", 1) == variant_seed(0, "abc", 1)
    assert (
        len(
            {variant_seed(0, "abc", 0), variant_seed(0, "abc", 1), variant_seed(1, "abc", 0), variant_seed(0, "abd", 0)}
        )
        == 4
    )
    # sha256 of the documented string, not hash(): the value is fixed across processes.
    assert variant_seed(0, "abc", 0) == int.from_bytes(__import__("hashlib").sha256(b"0:abc:0").digest()[:8], "big")


# -- run ---------------------------------------------------------------------------------------


def test_only_kept_train_rows_get_k_variants(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    out = _run(tmp_path, df, AugmentParams(variants=3, seed=1))
    orig = out[out["origin"] == "original"]
    aug = out[out["origin"] == "augmented"]
    assert len(orig) == len(df)
    assert orig["parent_ids"].map(list).tolist() == [[]] * len(df)
    assert orig.drop(columns=["origin", "parent_ids", "augment_params"]).equals(df)
    parents = set(df[(df["split"] == "train") & df["keep"]]["image_id"])
    assert len(aug) == 3 * len(parents)
    by_id = df.set_index("image_id")
    for row in aug.to_dict("records"):
        (pid,) = row["parent_ids"]
        assert pid in parents
        parent = by_id.loc[pid]
        for col in ("label", "split", "dup_group", "split_group", "source_url", "keep"):
            assert row[col] == parent[col]
        assert row["split"] == "train"
        assert pd.isna(row["dhash"])  # describes the parent's pixels, not the variant's
        assert row["format"] == "JPEG"
        data = (tmp_path / row["path"]).read_bytes()
        assert row["bytes"] == len(data)
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (row["width"], row["height"])
        record = json.loads(row["augment_params"])
        assert isinstance(record["seed"], int) and isinstance(record["applied"], list)
        assert all({"name", "params"} <= set(a) for a in record["applied"])
    assert out["image_id"].is_unique
    # val and test rows are untouched and have no children.
    assert not aug["split"].isin(["val", "test"]).any()


def test_same_seed_byte_identical_other_seed_differs(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    a = _run(tmp_path, df, AugmentParams(variants=2, seed=7), "a")
    b = _run(tmp_path, df, AugmentParams(variants=2, seed=7), "b")
    c = _run(tmp_path, df, AugmentParams(variants=2, seed=8), "c")
    assert _variant_bytes(tmp_path, a) == _variant_bytes(tmp_path, b)
    cols = ["image_id", "augment_params", "width", "height", "bytes"]
    assert a[cols].equals(b[cols])
    assert _variant_bytes(tmp_path, a) != _variant_bytes(tmp_path, c)


def test_rerun_replaces_earlier_variants(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    once = _run(tmp_path, df, AugmentParams(variants=2))
    twice = _run(tmp_path, once, AugmentParams(variants=2))
    assert twice["image_id"].tolist() == once["image_id"].tolist()


def test_png_and_zero_variants(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    png = _run(tmp_path, df, AugmentParams(variants=1, format="PNG"))
    assert set(png[png["origin"] == "augmented"]["format"]) == {"PNG"}
    assert all(p.endswith(".png") for p in png[png["origin"] == "augmented"]["path"])
    assert len(_run(tmp_path, df, AugmentParams(variants=0))) == len(df)
    assert len(_run(tmp_path, df, AugmentParams(preset="none"))) == len(df)


def test_failing_transform_is_recorded_not_raised(tmp_path: Path) -> None:
    # Image 2 is smaller than the crop: RandomCrop raises for it alone.
    df = _manifest(tmp_path, sizes={2: (40, 30)})
    failures: list[dict] = []
    params = AugmentParams(variants=2, transforms=[{"name": "RandomCrop", "height": 40, "width": 48, "p": 1.0}])
    out = _run(tmp_path, df, params, failures=failures)
    small = df.iloc[2]["image_id"]
    aug = out[out["origin"] == "augmented"]
    assert len(aug) == 2 * 2  # two healthy train parents
    assert small not in {p for ps in aug["parent_ids"] for p in ps}
    assert [(f["image_id"], f["variant"], f["reason"]) for f in failures] == [
        (small, 0, "transform_error"),
        (small, 1, "transform_error"),
    ]


def test_missing_file_is_recorded(tmp_path: Path) -> None:
    df = _manifest(tmp_path)
    (tmp_path / df.iloc[0]["path"]).unlink()
    failures: list[dict] = []
    out = _run(tmp_path, df, AugmentParams(variants=1), failures=failures)
    assert [(f["image_id"], f["reason"]) for f in failures] == [(df.iloc[0]["image_id"], "missing_file")]
    assert (out["origin"] == "augmented").sum() == 2


def test_input_without_a_split_is_one_clear_error(tmp_path: Path) -> None:
    from datakit.errors import ManifestError

    df = _manifest(tmp_path).drop(columns=["split"])
    with pytest.raises(ManifestError, match=r"has no train/val/test split \(no split column\): run `datakit split"):
        _run(tmp_path, df, AugmentParams(variants=1))


def test_failures_are_written_with_their_reason(tmp_path: Path) -> None:
    from datakit.manifest import read_stage_manifest
    from datakit.stage import write_result

    df = _manifest(tmp_path)
    (tmp_path / df.iloc[0]["path"]).unlink()
    ctx = StageContext(root=tmp_path, out=tmp_path / "data" / "aug")
    result = run(df, AugmentParams(variants=1), ctx)
    write_result(result, ctx, "augment", tmp_path / "augment.json")
    failed = pd.read_parquet(tmp_path / "data" / "aug" / "failures.parquet")
    assert failed[["image_id", "stage", "reason"]].values.tolist() == [[df.iloc[0]["image_id"], "augment", "missing_file"]]
    report = json.loads((tmp_path / "augment.json").read_text())
    assert report["failures"] == 1 and report["failures_by_reason"] == {"missing_file": 1} and report["variants"] == 2
    # the variants' paths are stored relative to the output folder and read back relative to the root
    back, root, _ = read_stage_manifest(tmp_path / "data" / "aug", tmp_path)
    assert back["path"].tolist() == result.manifest["path"].tolist()
    assert all((tmp_path / p).exists() for p in back.loc[back["origin"] == "augmented", "path"])
