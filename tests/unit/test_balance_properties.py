"""Properties of `datakit balance` over random class sizes, targets and strategies (issue 5):
no original row is ever dropped, only train rows change, every synthetic row's parents are
originals of its own class and split, and over-sampling reaches its normalised target."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from datakit.augment import AugmentParams, variant_maker
from datakit.balance import BALANCE_ORIGINS, BalanceParams, normalise_target, run
from datakit.images import ImageStore
from datakit.manifest import relpath
from datakit.stage import StageContext

STRATEGIES = ["none", "class_weights", "oversample", "undersample", "smote_pixels", "smote"]


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _project(root: Path, train: dict[str, int], other: dict[str, int], seed: int) -> tuple[pd.DataFrame, tuple[list[str], np.ndarray]]:
    rng = np.random.default_rng(seed)
    store = ImageStore(root / "data" / "split")
    rows = []
    plan = [("train", c) for c, n in train.items() for _ in range(n)]
    plan += [(split, c) for c in train for split, n in other.items() for _ in range(n)]
    for i, (split, label) in enumerate(plan):
        data = _png(rng)
        image_id, rel = store.put(data, "png")
        rows.append({"image_id": image_id, "path": relpath(root, store.folder / rel), "label": label, "width": 12,
                     "height": 12, "format": "PNG", "bytes": len(data), "keep": bool(rng.random() > 0.1) or split != "train",
                     "split": split, "split_group": f"g{i}"})
    df = pd.DataFrame(rows)
    X = rng.normal(0, 1, (len(df), 6)).astype(np.float32)
    return df, (df["image_id"].tolist(), X)


targets = st.one_of(
    st.sampled_from(["auto", "not majority", "all"]),
    st.floats(0.3, 1.0),
    st.integers(1, 9),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    train=st.dictionaries(st.sampled_from(["vest", "shirt", "hoodie", "blouse"]), st.integers(2, 9), min_size=2, max_size=4),
    other=st.fixed_dictionaries({"val": st.integers(0, 2), "test": st.integers(0, 2)}),
    strategy=st.sampled_from(STRATEGIES),
    target=targets,
    seed=st.integers(0, 2**16),
)
def test_balance_properties(train, other, strategy, target, seed) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        df, vectors = _project(root, train, other, seed)
        if strategy == "undersample" and target in ("not majority", "all"):
            target = "auto"  # not-majority/all under-sample every class down to the minority: valid but dull
        params = BalanceParams(strategy=strategy, target=target, seed=seed, pixels_size=4, k_neighbors=3)
        aug = AugmentParams(transforms=[{"name": "RandomBrightnessContrast", "p": 1.0}])
        try:
            result = run(df, params, StageContext(root=root, out=root / "data" / "balance"), make_variant=variant_maker(aug),
                         vectors=vectors)
            out, report = result.manifest, result.report
        except Exception as exc:  # noqa: BLE001 - only a ParamsError on a target imblearn refuses is allowed
            from datakit.errors import ParamsError

            assert isinstance(exc, ParamsError) and "balance.target" in str(exc), exc
            return

        # 1. no original row is dropped; originals keep their label, split and path
        before = df.set_index("image_id")
        after = out.set_index("image_id")
        assert set(before.index) <= set(after.index)
        for col in ("label", "split", "path"):
            assert (after.loc[before.index, col] == before[col]).all()

        # 2. only train changes: val/test rows identical, every new row is train
        cols = list(df.columns)
        b = df[df["split"] != "train"].reset_index(drop=True)
        a = out[out["split"] != "train"][cols].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        new = out[out["origin"].isin(BALANCE_ORIGINS)]
        assert (new["split"] == "train").all()
        # keep only ever turns False for train originals, and only by undersampling with a reason
        turned = before["keep"].astype(bool) & ~after.loc[before.index, "keep"].astype(bool)
        assert (before.loc[turned[turned].index, "split"] == "train").all()
        assert (after.loc[turned[turned].index, "balance_reason"] == "undersampled").all()
        if strategy != "undersample":
            assert not turned.any()

        # 3. synthetic rows: parents are kept train originals of the same class
        originals = df[(df["split"] == "train") & df["keep"]].set_index("image_id")
        for row in new.itertuples():
            assert 1 <= len(row.parent_ids) <= 2
            for p in row.parent_ids:
                assert p in originals.index and originals.at[p, "label"] == row.label

        # 4. over-sampling reaches the normalised target (nothing failed to read here)
        counts = report["counts_before"]
        if strategy in ("oversample", "smote", "smote_pixels") and len(counts) >= 2 and report["failures"] == 0:
            assert report["counts_after"] == normalise_target(target, counts, "over")
        if strategy in ("none", "class_weights"):
            assert len(out) == len(df)
