"""`datakit export`: imagefolder / hf layouts, link modes, skips, refusals, clean re-export."""

from __future__ import annotations

import csv
import errno
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from datakit import export as export_mod
from datakit.errors import ManifestError, ParamsError, StoreError
from datakit.export import export, export_manifest
from datakit.manifest import write_table

# (image_id, label, split, keep, format)
ROWS = [
    ("a1", "cat", "train", True, "jpg"),
    ("a2", "cat", "train", True, "png"),
    ("a3", "dog", "train", True, "jpg"),
    ("a4", "dog", "val", True, "png"),
    ("a5", "cat", "val", True, "jpg"),
    ("a6", "dog", "test", True, "jpg"),
    ("a7", "dog", "train", False, "jpg"),  # dedup dropped it
    ("a8", "cat", None, True, "png"),  # never placed in a split
]


def _project(tmp_path: Path, rows: list[tuple] = ROWS) -> tuple[Path, pd.DataFrame]:
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    recs = []
    for i, (image_id, label, split, keep, fmt) in enumerate(rows):
        rel = f"images/{image_id[:2]}/{image_id}.{fmt}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 30 % 256, 100, 200)).save(root / rel, "JPEG" if fmt == "jpg" else "PNG")
        recs.append(
            {
                "image_id": image_id,
                "path": rel,
                "label": label,
                "split": split,
                "keep": keep,
                "source_url": f"https://example.org/{image_id}",
                "license": "cc-by",
            }
        )
    df = pd.DataFrame(recs)
    write_table(df, root / "split" / "manifest.parquet")
    return root, df


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())


def _visible(out: Path) -> list[str]:
    return [t for t in _tree(out) if not t.startswith(".")]


def test_imagefolder_hardlink(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    out = tmp_path / "export"
    rep = export(df, root, out)
    assert _visible(out) == [
        "ATTRIBUTION.md",  # the credits of the exported images (datakit.licences)
        "attribution.csv",
        "test/dog/a6.jpg",
        "train/cat/a1.jpg",
        "train/cat/a2.png",
        "train/dog/a3.jpg",
        "val/cat/a5.jpg",
        "val/dog/a4.png",
    ]
    assert rep.counts == {"test": {"dog": 1}, "train": {"cat": 2, "dog": 1}, "val": {"cat": 1, "dog": 1}}
    assert rep.skipped == {"dropped": 1, "no_split": 1}
    assert rep.link_used == "hardlink" and rep.links == {"hardlink": 6} and rep.total == 6
    src = os.stat(root / "images/a1/a1.jpg")
    dst = os.stat(out / "train/cat/a1.jpg")
    assert (src.st_ino, src.st_dev) == (dst.st_ino, dst.st_dev)
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())
    assert "exported 6 images" in rep.lines()[0]


def test_imagefolder_copy_permissions_and_content(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    out = tmp_path / "export"
    rep = export(df, root, out, link="copy")
    f = out / "val/dog/a4.png"
    assert rep.link_used == "copy"
    assert os.stat(f).st_ino != os.stat(root / "images/a4/a4.png").st_ino
    assert f.read_bytes() == (root / "images/a4/a4.png").read_bytes()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(out / "val").st_mode) == 0o777 & ~umask  # not mkdtemp's 0700


def test_symlink_is_relative_and_resolves(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    out = root / "exports" / "v1"
    export(df, root, out, link="symlink")
    link = out / "train/cat/a2.png"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    assert link.resolve() == (root / "images/a2/a2.png").resolve()
    with Image.open(link) as im:
        assert im.size == (8, 8)


def test_hf_layout_metadata(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    out = tmp_path / "hf"
    rep = export(df, root, out, layout="hf", splits=["train", "val"])
    assert _visible(out) == [
        "ATTRIBUTION.md",  # the credits of the exported images (datakit.licences)
        "attribution.csv",
        "train/a1.jpg",
        "train/a2.png",
        "train/a3.jpg",
        "train/metadata.csv",
        "val/a4.png",
        "val/a5.jpg",
        "val/metadata.csv",
    ]
    with open(out / "train/metadata.csv", newline="", encoding="utf-8") as fh:
        meta = list(csv.DictReader(fh))
    assert list(meta[0]) == ["file_name", "label", "image_id", "source_url", "license"]
    assert [(m["file_name"], m["label"]) for m in meta] == [("a1.jpg", "cat"), ("a2.png", "cat"), ("a3.jpg", "dog")]
    assert meta[0]["source_url"] == "https://example.org/a1" and meta[0]["license"] == "cc-by"
    assert rep.skipped == {"dropped": 1, "no_split": 1, "not_selected": 1}


def test_export_manifest_reads_file(tmp_path: Path) -> None:
    root, _ = _project(tmp_path)
    rep = export_manifest(root / "split" / "manifest.parquet", tmp_path / "o", layout="hf", link="copy")
    assert rep.total == 6 and (tmp_path / "o/test/metadata.csv").is_file()


def test_hardlink_falls_back_to_copy_across_filesystems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, df = _project(tmp_path)

    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(export_mod.os, "link", no_link)
    rep = export(df, root, tmp_path / "o")
    assert rep.links == {"copy": 6} and rep.link_used == "copy"
    assert len(rep.notes) == 1 and "copied instead" in rep.notes[0]


def test_reexport_is_clean_and_idempotent(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    out = tmp_path / "o"
    export(df, root, out)
    first = _visible(out)
    (out / "train/cat/stray.jpg").write_bytes(b"x")  # a file the new export does not have
    (out / ".export-train-dead.tmp").mkdir()  # a killed export's leftover
    (out / "notes.txt").write_text("mine")  # user file beside the splits: left alone
    export(df, root, out)
    assert _visible(out) == sorted(first + ["notes.txt"])
    assert not (out / ".export-train-dead.tmp").exists()
    # A split that disappears from the manifest is removed on a full re-export...
    df2 = df[df["split"] != "test"]
    rep = export(df2, root, out)
    assert not (out / "test").exists() and rep.removed_splits == ["test"]
    # ...but an explicit --splits export leaves other split folders alone.
    rep = export(df, root, out, layout="hf", splits=["val"])
    assert (out / "val/metadata.csv").is_file() and (out / "train/cat/a1.jpg").is_file()


def test_refuses_foreign_split_folder(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    out = tmp_path / "o"
    (out / "train").mkdir(parents=True)
    (out / "train" / "precious.txt").write_text("keep me")
    with pytest.raises(ParamsError, match="not written by datakit export"):
        export(df, root, out)
    assert (out / "train" / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("labels", "match"),
    [(("cat", "Cat"), "collide"), (("cat", "a/b"), "separator"), (("cat", ".."), "dot")],
)
def test_unsafe_labels_refused(tmp_path: Path, labels: tuple[str, str], match: str) -> None:
    rows = [("b1", labels[0], "train", True, "jpg"), ("b2", labels[1], "train", True, "jpg")]
    root, df = _project(tmp_path, rows)
    with pytest.raises(ParamsError, match=match):
        export(df, root, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    # The hf layout does not make label folders, so the same labels are fine there.
    assert export(df, root, tmp_path / "h", layout="hf").total == 2


def test_unsafe_split_names_and_unknown_split(tmp_path: Path) -> None:
    root, df = _project(tmp_path, [("b1", "cat", "../x", True, "jpg")])
    with pytest.raises(ParamsError, match="split names"):
        export(df, root, tmp_path / "o")
    root, df = _project(tmp_path / "2")
    with pytest.raises(ParamsError, match="'vaal' not in the manifest"):
        export(df, root, tmp_path / "o", splits=["vaal"])


def test_refuses_symlink_planted_in_out(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    out = tmp_path / "o"
    export(df, root, out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for p in out.iterdir():
        if p.name == "train":
            os.rename(p, tmp_path / "old-train")
    os.symlink(elsewhere, out / "train")
    with pytest.raises(StoreError, match="symlink"):
        export(df, root, out)
    assert list(elsewhere.iterdir()) == []


def test_bad_manifest_rows(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    with pytest.raises(ManifestError, match="missing columns split"):
        export(df.drop(columns=["split"]), root, tmp_path / "o")
    bad = df.copy()
    bad.loc[0, "path"] = "../../etc/passwd"
    bad.loc[1, "path"] = "images/zz/nope.jpg"
    bad.loc[2, "image_id"] = "../evil"
    with pytest.raises(ManifestError) as err:
        export(bad, root, tmp_path / "o")
    msg = str(err.value)
    assert "outside the project root" in msg and "nope.jpg" in msg and "unusable as a file name" in msg
    with pytest.raises(ParamsError, match="holds source images"):
        export(df, root, root / "images")


def test_a_row_whose_keep_is_missing_is_not_exported(tmp_path: Path) -> None:  # stage.kept: no decision is not a yes
    root, df = _project(tmp_path)
    df["keep"] = df["keep"].astype("object")
    df.loc[0, "keep"] = None  # a1, train
    rep = export(df, root, tmp_path / "o")
    assert rep.skipped["dropped"] == 2 and rep.total == 5
    assert not (tmp_path / "o" / "train" / "cat" / "a1.jpg").exists()


def test_export_manifest_reads_a_moved_folder_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from datakit.manifest import write_stage_manifest

    root, df = _project(tmp_path)
    write_stage_manifest(df, root / "split" / "manifest.parquet", root)  # paths stored as ../images/...
    other = tmp_path / "other"
    (other / ".git").mkdir(parents=True)  # moved into another project, at a depth: its root is `other`
    moved = other / "sub" / "proj"
    shutil.move(str(root), str(moved))
    shutil.rmtree(moved / ".git")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rep = export_manifest(moved / "split", tmp_path / "o", link="copy")
    assert rep.total == 6
    exported = tmp_path / "o" / "train" / "cat" / "a2.png"
    assert exported.read_bytes() == (moved / "images" / "a2" / "a2.png").read_bytes()


def test_export_of_a_folder_without_a_split_names_the_stage_to_run(tmp_path: Path) -> None:
    root, df = _project(tmp_path)
    write_table(df.drop(columns=["split"]), root / "split" / "manifest.parquet")
    with pytest.raises(ManifestError, match=r"has no train/val/test split .*run `datakit split"):
        export_manifest(root / "split", tmp_path / "o")
    write_table(df, root / "split" / "manifest.parquet")
    with pytest.raises(ParamsError, match="export layout must be one of imagefolder, hf, not 'tree'"):
        export_manifest(root / "split", tmp_path / "o", layout="tree")  # type: ignore[arg-type]
