"""`datakit colors` through the CLI on synthetic scrape output: colour columns that round-trip
through Parquet, the HTML page, masks, the figures, an unreadable image recorded (not fatal),
and params errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
import yaml
from PIL import Image
from typer.testing import CliRunner

from datakit.cli.colors import register
from datakit.colors import COLOR_COLUMNS
from datakit.manifest import read_manifest, read_stage_manifest, write_table
from tests.e2e.helpers import invoke, write_params

pytestmark = pytest.mark.timeout(120)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """datakit (test app)."""

    register(app)
    return app


def colors(*args: str | Path) -> object:
    return CliRunner().invoke(_app(), ["colors", *[str(a) for a in args]], catch_exceptions=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("colors")
    (tmp / ".git").mkdir()  # the project root: manifest paths are relative to it
    params = write_params(tmp, items=["vest", "hoodie"], attributes=["striped", "dotted"], per_query=6)
    res = invoke("scrape", "--provider", "synthetic", "--params", params, "--out", tmp / "scrape",
                 "--report", tmp / "reports" / "scrape.json")
    assert res.exit_code == 0, res.output
    doc = yaml.safe_load(params.read_text())
    doc["colors"] = {"workers": 1, "max_colors": 3, "palette": "basic"}
    params.write_text(yaml.safe_dump(doc))
    return tmp, params


def _break_one_image(tmp: Path) -> str:
    """A copy of the scrape folder whose first image file no longer decodes."""
    src = read_stage_manifest(tmp / "scrape" / "manifest.parquet")[0]  # paths relative to the project root
    broken = src.iloc[0]
    (tmp / broken["path"]).write_bytes(b"<html>not an image</html>")
    return str(broken["image_id"])


def test_colors_columns_page_masks_and_figures(project) -> None:
    tmp, params = project
    broken_id = _break_one_image(tmp)
    out = tmp / "colors"
    res = colors(tmp / "scrape", "--out", out, "--params", params, "--masks", "--workers", "2",
                 "--report", tmp / "reports" / "colors.json")
    assert res.exit_code == 0, res.output
    assert "images analysed" in res.output

    df = read_manifest(out)  # validates: core columns, unique ids, files present
    scrape = pd.read_parquet(tmp / "scrape" / "manifest.parquet")
    assert len(df) == len(scrape) and list(df.columns[: len(scrape.columns)]) == list(scrape.columns)
    assert set(COLOR_COLUMNS) <= set(df.columns)

    bad = df[df["image_id"] == broken_id].iloc[0]
    assert bad["color_error"].startswith("not_an_image") and bad["colors"] is None and pd.isna(bad["color_1"])
    ok = df[df["image_id"] != broken_id]
    assert ok["color_error"].isna().all() and ok["color_1"].notna().all()
    for r in ok.itertuples():
        cols = list(r.colors)
        assert 1 <= len(cols) <= 3
        assert cols[0]["name"] == r.color_1 and cols[0]["hex"] == r.color_1_hex and cols[0]["weight"] == r.color_1_weight
        assert [c["weight"] for c in cols] == sorted((c["weight"] for c in cols), reverse=True)
        assert sum(c["weight"] for c in cols) <= 1.0 + 5e-4  # each weight is rounded to 4 decimals and 0 < r.color_foreground <= 1
        assert r.color_method in ("border", "grabcut", "border+center", "grabcut+center")
        mask = Image.open(tmp / r.color_mask)
        assert mask.size == (r.width, r.height) and set(np.unique(np.asarray(mask))) <= {0, 255}

    # a later stage rewrites the manifest without our schema: the list of structs survives
    write_table(df, tmp / "again.parquet")
    again = pd.read_parquet(tmp / "again.parquet")
    assert [list(x) if x is not None else None for x in again["colors"]] == [list(x) if x is not None else None for x in df["colors"]]

    page = (out / "colors.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= len(ok) and "class=\"sw\"" in page
    assert "Not analysed (1)" in page and "not_an_image" in page

    rep = json.loads((tmp / "reports" / "colors.json").read_text())
    assert rep["images"] == len(df) and rep["analysed"] == len(ok) and rep["failed"] == 1
    assert rep["failed_by_reason"] == {"not_an_image": 1} and sum(rep["dominant"].values()) == len(ok)
    assert rep["palette"] == "basic" and rep["params"]["k"] == 6

    # the image not analysed is also a failures row, with the code of its color_error as reason
    failed = pd.read_parquet(out / "failures.parquet")
    assert failed["image_id"].tolist() == [broken_id] and failed["reason"].tolist() == ["not_an_image"]
    assert failed["stage"].tolist() == ["colors"] and failed["detail"].iloc[0].startswith("not_an_image")


def test_rerun_is_deterministic_whatever_the_workers(project) -> None:
    tmp, params = project
    a = colors(tmp / "scrape", "--out", tmp / "c1", "--params", params, "--report", tmp / "reports" / "c1.json")
    assert a.exit_code == 0, a.output
    first = read_stage_manifest(tmp / "c1" / "manifest.parquet")[0]  # paths relative to the project root
    rows = first[first["color_error"].isna()]
    assert rows["color_mask"].isna().all() and not (tmp / "c1" / "masks").exists()  # masks only when asked
    sub = tmp / "sub"
    sub.mkdir(exist_ok=True)
    write_table(first.drop(columns=COLOR_COLUMNS).head(8), sub / "manifest.parquet")
    b = colors(sub, "--out", tmp / "c2", "--params", params, "--workers", "2", "--palette", "fashion",
               "--report", tmp / "reports" / "c2.json")
    assert b.exit_code == 0, b.output
    second = pd.read_parquet(tmp / "c2" / "manifest.parquet")
    assert len(second) == 8
    # the fashion palette names finer colours; its families are basic names
    assert set(second["color_1_family"].dropna()) <= set(pd.read_csv(
        Path(__file__).resolve().parents[2] / "src" / "datakit" / "palettes" / "basic.csv", comment="#")["name"])
    c = colors(sub, "--out", tmp / "c3", "--params", params, "--workers", "1", "--palette", "fashion",
               "--report", tmp / "reports" / "c3.json")
    assert c.exit_code == 0
    third = pd.read_parquet(tmp / "c3" / "manifest.parquet")
    assert second[COLOR_COLUMNS].astype(str).equals(third[COLOR_COLUMNS].astype(str))


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"foreground": "magic"}, "colors.foreground"),
        ({"k": 0}, "colors.k"),
        ({"merge_delta_e": -1}, "colors.merge_delta_e"),
        ({"colour": "red"}, "colors.colour: unknown key"),
        ({"palette": "missing.csv"}, "colors.palette"),
        ("auto", "colors: expected a mapping"),
    ],
)
def test_bad_params_name_the_key(project, tmp_path, section, words) -> None:
    tmp, _ = project
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"colors": section}))
    res = colors(tmp / "scrape", "--out", tmp_path / "out", "--params", params, "--report", tmp_path / "r.json")
    assert res.exit_code == 1
    assert words in res.output
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_bad_option_and_missing_manifest(project, tmp_path) -> None:
    tmp, params = project
    res = colors(tmp / "scrape", "--out", tmp_path / "o", "--params", params, "--foreground", "laser")
    assert res.exit_code == 1 and "colors.foreground" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = colors(empty, "--out", tmp_path / "o2", "--params", params)
    assert res.exit_code == 1 and "no manifest" in res.output


def test_an_input_without_image_columns_is_one_line(project, tmp_path) -> None:
    tmp, params = project
    folder = tmp_path / "notimages"
    folder.mkdir()
    write_table(pd.DataFrame({"image_id": ["a"], "path": ["x.jpg"]}), folder / "manifest.parquet")
    res = colors(folder, "--out", tmp_path / "o3", "--params", params)
    assert res.exit_code == 1 and "missing columns: label" in res.output and str(folder) in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "o3" / "manifest.parquet").exists()
