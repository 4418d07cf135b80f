"""`datakit.audit` (issue 4, reliability.md SPL-04): planted cross-split leaks in a folder layout
are flagged and named (identical, brightness-shifted and resized copies), a clean layout gives
none, a manifest audit agrees with the folder audit, label conflicts and missing classes are
reported, undecodable files are listed, not fatal."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from datakit import audit as A
from datakit.errors import ManifestError
from datakit.manifest import read_table, write_table
from datakit.params import AuditParams
from datakit.stage import StageContext

CLASSES = ("cat", "dog", "fox")


def picture(seed: int, side: int = 96) -> Image.Image:
    """A distinct picture: a smooth random colour field, a few shapes, a little noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (5, 5, 3)).astype(np.uint8)
    im = Image.fromarray(coarse, "RGB").resize((side, side), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(5):
        x0, y0 = (int(v) for v in rng.integers(0, side - 24, 2))
        x1, y1 = x0 + int(rng.integers(12, side // 2)), y0 + int(rng.integers(12, side // 2))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    im = im.filter(ImageFilter.GaussianBlur(1.0))
    arr = np.asarray(im, dtype=np.int16) + rng.normal(0, 2, (side, side, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def save(im: Image.Image, path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    path.write_bytes(buf.getvalue())
    return path


def clean_layout(root: Path, per_split: dict[str, int] | None = None) -> Path:
    """root/<split>/<class>/<n>.png, every picture different."""
    per_split = per_split or {"train": 4, "val": 2, "test": 2}
    seed = 0
    for split, n in per_split.items():
        for c in CLASSES:
            for k in range(n):
                seed += 1
                save(picture(1000 + seed), root / split / c / f"{c}_{k}.png", "PNG" if seed % 2 else "JPEG")
    return root


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clean_layout(tmp_path_factory.mktemp("clean") / "data")


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """The clean layout plus planted cross-split copies; returns (root, {class: train source})."""
    root = clean_layout(tmp_path_factory.mktemp("leaky") / "data")
    src = {c: sorted((root / "train" / c).iterdir())[k] for c, k in (("cat", 0), ("dog", 1), ("fox", 2))}
    # identical bytes in test
    shutil.copyfile(src["cat"], root / "test" / "cat" / "copy_of_cat.png")
    # a brighter (+10 %) copy in val
    dog = Image.open(src["dog"]).convert("RGB")
    save(ImageEnhance.Brightness(dog).enhance(1.1), root / "val" / "dog" / "bright_dog.png")
    # a smaller (96 -> 72 px) re-encoded copy and a darker (-10 %) copy in test
    fox = Image.open(src["fox"]).convert("RGB")
    save(fox.resize((72, 72), Image.Resampling.LANCZOS), root / "test" / "fox" / "small_fox.jpg", "JPEG")
    save(ImageEnhance.Brightness(fox).enhance(0.9), root / "test" / "fox" / "dark_fox.png")
    # not an image: listed, not fatal
    (root / "train" / "cat" / "notes.txt").write_text("hello")
    return root, src


def rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def audit_manifest(df: pd.DataFrame, root: Path, hashes: str = "recompute", **params: object) -> A.AuditReport:
    """The audit stage on a manifest whose paths are relative to `root`; its AuditReport."""
    result = A.run(df, AuditParams(**params), StageContext(root=root), hashes=hashes)
    assert result.manifest is df and result.report == result.extra["audit"].to_json()
    assert result.extra["ok"] is result.extra["audit"].ok
    return result.extra["audit"]


def test_clean_folder_has_no_leaks(clean: Path) -> None:
    rep = A.audit_folder(clean)
    assert rep.ok and rep.leaks == 0 and rep.exact_leaks == 0 and rep.near_leaks == 0
    assert rep.ahash_leaks == 0 and rep.label_conflicts == 0
    assert rep.splits == ["train", "val", "test"]
    assert rep.counts == {c: {"train": 4, "val": 2, "test": 2} for c in CLASSES}
    assert all(v == [] for v in rep.missing.values())
    assert all(abs(d) < 1e-9 for s in rep.deviation.values() for d in s.values())
    json.dumps(rep.to_json())


def test_planted_leaks_are_flagged_and_named(leaky: tuple[Path, dict[str, Path]]) -> None:
    root, src = leaky
    rep = A.audit_folder(root)
    assert not rep.ok
    named = {(p["path_a"], p["path_b"]): p for p in rep.leak_pairs}
    exact = named[(rel(root, src["cat"]), "test/cat/copy_of_cat.png")]
    assert exact["kind"] == "exact" and exact["distance"] == 0
    assert (exact["split_a"], exact["split_b"]) == ("train", "test") and exact["a"] == exact["b"]
    for planted in ((rel(root, src["dog"]), "val/dog/bright_dog.png"),
                    (rel(root, src["fox"]), "test/fox/small_fox.jpg"),
                    (rel(root, src["fox"]), "test/fox/dark_fox.png")):
        assert planted in named, (planted, rep.summary())
        assert named[planted]["kind"] == "near" and named[planted]["distance"] <= rep.radius
    # the two fox copies in test are near each other too, but that is within one split: no leak
    assert rep.exact_leaks == 1 and rep.near_leaks == 3 and rep.leaks == 4
    assert rep.leaked_images == {"train": 0, "val": 1, "test": 3}
    # the deepchecks-style oracle finds the identical and brightness-shifted copies as well
    oracle = {(p["path_a"], p["path_b"]) for p in rep.ahash_pairs}
    assert (rel(root, src["cat"]), "test/cat/copy_of_cat.png") in oracle
    assert (rel(root, src["dog"]), "val/dog/bright_dog.png") in oracle
    assert rep.ahash_only == 0
    # the text file is listed, not fatal, and not counted
    assert [u["path"] for u in rep.unreadable] == ["train/cat/notes.txt"]
    assert rep.unreadable[0]["reason"] == "not_an_image"
    out = rep.to_json()
    assert out["ok"] is False and out["leaks"] == 4 and len(out["leak_pairs"]) == 4
    assert "FAIL" in rep.summary() and "copy_of_cat.png" in rep.summary()
    # a tolerance lets the same audit pass
    assert A.audit_folder(root, AuditParams(max_leaks=4)).ok


def test_radius_zero_keeps_exact_copies_only(leaky: tuple[Path, dict[str, Path]]) -> None:
    rep = A.audit_folder(leaky[0], AuditParams(radius=0))
    assert rep.exact_leaks == 1 and rep.near_leaks == 0


def _manifest_of(folder: Path) -> pd.DataFrame:
    """A split manifest over a folder layout, ids from the bytes (as datakit stores images)."""
    import hashlib

    rows = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".png", ".jpg"):
            split, label = p.relative_to(folder).parts[:2]
            rows.append({"image_id": hashlib.sha256(p.read_bytes()).hexdigest(),
                         "path": p.relative_to(folder.parent).as_posix(), "label": label, "split": split})
    return pd.DataFrame(rows)


def test_manifest_audit_agrees_with_folder_audit(leaky: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    leaky = leaky[0]
    df = _manifest_of(leaky)
    df["keep"] = True
    df.loc[len(df)] = {"image_id": "dropped", "path": "data/none.png", "label": "cat", "split": "test", "keep": False}
    write_table(df, tmp_path / "split.parquet")
    back = read_table(tmp_path / "split.parquet")
    by_manifest = audit_manifest(back, leaky.parent)
    by_folder = A.audit_folder(leaky)
    assert by_manifest.unreadable == []
    assert (by_manifest.exact_leaks, by_manifest.near_leaks) == (by_folder.exact_leaks, by_folder.near_leaks)
    assert by_manifest.counts == by_folder.counts and by_manifest.missing == by_folder.missing
    pairs = lambda r: {(p["a"], p["b"], p["kind"]) for p in r.leak_pairs}  # noqa: E731
    assert pairs(by_manifest) == pairs(by_folder)
    assert by_manifest.ahash_leaks == by_folder.ahash_leaks

    # hashes="manifest" trusts the dhash column: a planted hash makes a leak it cannot see in files
    from datakit.dedup.hashing import hash_bytes

    clean_df = df[~df["path"].str.contains("copy_of|bright_|small_|dark_|none")].reset_index(drop=True)
    clean_df["dhash"] = [hash_bytes((leaky.parent / p).read_bytes(), exact=True).dhash for p in clean_df["path"]]
    trusted = audit_manifest(clean_df, leaky.parent, hashes="manifest")
    assert trusted.ok and trusted.leaks == 0 and trusted.ahash_leaks is None
    recomputed = audit_manifest(clean_df, leaky.parent)
    assert recomputed.ok and recomputed.leaks == 0


def test_missing_file_in_manifest_is_listed(clean: Path) -> None:
    df = _manifest_of(clean)
    df.loc[len(df)] = {"image_id": "gone", "path": "data/test/cat/gone.png", "label": "cat", "split": "test"}
    rep = audit_manifest(df, clean.parent)
    assert [(u["image_id"], u["reason"]) for u in rep.unreadable] == [("gone", "missing_file")]
    assert rep.leaks == 0
    # the stage's failures rows say the same, with a reason code
    fails = A.run(df, AuditParams(embeddings="none"), StageContext(root=clean.parent)).failures
    assert fails[["image_id", "label", "stage", "reason"]].values.tolist() == [["gone", "cat", "audit", "missing_file"]]


def test_label_conflicts_and_missing_class(tmp_path: Path) -> None:
    root = tmp_path / "data"
    save(picture(1), root / "train" / "cat" / "a.png")
    save(picture(2), root / "train" / "dog" / "b.png")
    save(picture(3), root / "train" / "fox" / "c.png")
    save(picture(4), root / "test" / "cat" / "d.png")
    save(picture(5), root / "test" / "dog" / "e.png")
    # the same picture labelled cat in train and dog in train: a conflict within one split
    shutil.copyfile(root / "train" / "cat" / "a.png", root / "train" / "dog" / "a_again.png")
    # a near copy of train/fox/c labelled dog in test: a leak and a conflict
    save(ImageEnhance.Brightness(picture(3)).enhance(1.1), root / "test" / "dog" / "c_bright.png")
    rep = A.audit_folder(root)
    kinds = sorted((p["kind"], p["label_a"], p["label_b"]) for p in rep.conflict_pairs)
    assert rep.label_conflicts == 2
    assert ("exact", "cat", "dog") in kinds
    assert any(k[0] == "near" and {k[1], k[2]} == {"fox", "dog"} for k in kinds)
    assert rep.exact_leaks == 0 and rep.near_leaks == 1
    assert rep.missing == {"train": [], "test": ["fox"]}
    assert rep.counts["fox"] == {"train": 1, "test": 0}
    # fox: all of its 1 image in train (share 4/7): deviation 1 - 4/7
    assert rep.deviation["train"]["fox"] == pytest.approx(1 - 4 / 7, abs=1e-6)
    assert rep.max_deviation["test"] == pytest.approx(3 / 7, abs=1e-6)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lacks"):
        audit_manifest(pd.DataFrame({"image_id": ["x"], "path": ["p"], "label": ["c"]}), tmp_path)
    with pytest.raises(ValueError, match="dhash"):
        audit_manifest(pd.DataFrame({"image_id": ["x"], "path": ["p"], "label": ["c"], "split": ["t"]}),
                         tmp_path, hashes="manifest")
    with pytest.raises(FileNotFoundError):
        A.audit_folder(tmp_path / "nope")
    assert A.ahash_bits() == 4


def test_an_unsplit_folder_says_run_split_first(clean: Path, tmp_path: Path) -> None:
    from datakit.manifest import MANIFEST, write_stage_manifest
    from tests.e2e.helpers import invoke

    # a stage folder whose manifest has no split column (a dedup output, say)
    (tmp_path / ".git").mkdir()
    shutil.copytree(clean, tmp_path / "data")
    df = _manifest_of(tmp_path / "data").drop(columns=["split"])
    write_stage_manifest(df, tmp_path / "dedup" / MANIFEST, tmp_path, stage="dedup")
    res = invoke("audit", tmp_path / "dedup", "--embeddings", "none", "--report", tmp_path / "audit.json")
    assert res.exit_code == 1 and "has no train/val/test split" in res.output and "run `datakit split" in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "audit.json").exists()
    # a folder of class folders (LABEL/images, no SPLIT level) is not a split either
    flat = tmp_path / "flat"
    for k, c in enumerate(CLASSES):
        save(picture(500 + k), flat / c / "a.png")
    res = invoke("audit", flat, "--embeddings", "none", "--report", tmp_path / "audit.json")
    assert res.exit_code == 1 and "no images in SPLIT/LABEL/ folders" in res.output and "datakit split" in res.output
    with pytest.raises(ManifestError, match="SPLIT/LABEL"):
        A.audit_folder(flat)


def test_which_vectors_the_audit_uses(clean: Path, tmp_path: Path) -> None:
    from datakit.errors import DatakitError
    from datakit.models import ModelError

    table = A.folder_table(clean)
    calls: list[int] = []

    def embedder(frame: pd.DataFrame, root: Path) -> tuple[list[str], np.ndarray]:
        calls.append(len(frame))
        return frame["image_id"].tolist(), np.eye(len(frame), 8, dtype=np.float32)

    def broken(frame: pd.DataFrame, root: Path) -> tuple[list[str], np.ndarray]:
        raise ModelError("no weights for efficientnet_lite0 here")

    notes: list[str] = []

    class Notes:
        def start(self, phase: str, total: int) -> None: ...
        def advance(self, phase: str, n: int = 1) -> None: ...
        def note(self, message: str) -> None:
            notes.append(message)

    assert A.audit_vectors(AuditParams(embeddings="none"), table, clean, embedder=embedder) is None and calls == []
    ids, X = A.audit_vectors(AuditParams(embeddings="auto"), table, clean, embedder=embedder)
    assert calls == [len(table)] and ids == table["image_id"].tolist() and X.shape == (len(table), 8)
    # auto: a model that cannot be built leaves the dhash alone, and says so
    assert A.audit_vectors(AuditParams(), table, clean, embedder=broken, progress=Notes()) is None
    assert len(notes) == 1 and "no embedding signal" in notes[0] and "efficientnet_lite0" in notes[0]
    # compute: it is an error
    with pytest.raises(DatakitError, match="audit.embeddings: compute: no weights"):
        A.audit_vectors(AuditParams(embeddings="compute"), table, clean, embedder=broken)
    # a folder: its table is read, no model is asked
    from datakit.vectors import write_embeddings

    write_embeddings(tmp_path / "embed" / "embeddings.parquet", ids, X)
    got, _ = A.audit_vectors(AuditParams(embeddings=str(tmp_path / "embed")), table, clean, embedder=broken)
    assert got == ids and len(calls) == 1
    # the folder audit with vectors: the embedding signal is on
    rep = A.audit_folder(clean, AuditParams(embeddings="auto"), embedder=embedder)
    assert rep.signals == ["dhash", "embedding"] and rep.ok


def test_rows_not_kept_are_left_out(clean: Path) -> None:
    df = _manifest_of(clean)
    df["keep"] = True
    gone = df.index[df["split"].eq("test")][:2]
    df["keep"] = df["keep"].astype(object)
    df.loc[gone[0], "keep"] = None  # no decision is not a yes (stage.kept)
    df.loc[gone[1], "keep"] = False
    rep = audit_manifest(df, clean.parent, embeddings="none")
    assert rep.n_images == len(df) - 2 and sum(rep.counts[c]["test"] for c in CLASSES) == 6 - 2
