"""`datakit report`: one static HTML page for a whole pipeline run (issue 6).

The page reads whatever the run produced and says what it did not find, so a pipeline that
stopped at `split` still gets a page. Every part is optional:

| section | read from |
|---|---|
| header | params.yaml (when given), installed versions |
| funnel | `scrape/manifest.parquet` + `scrape/failures.parquet` (returned, stored), `dedup` (unique: `keep`), `split` (kept rows per split), `augment` (train with variants), `balance` (balanced train: the rows `counts_after` counts) |
| duplicates | `dedup/manifest.parquet` (every label-conflict group and the largest groups, capped), `reports/dedup.json` |
| audit | `reports/audit.json` (verdict, leaks against max_leaks, leak pairs as thumbnails) |
| balance | `reports/balance.json` (before / after / weight per class) |
| training | `train/history.csv` (loss and accuracy per epoch), `reports/train.json` |
| evaluation | `reports/evaluate.json`, `evaluate/per_class.csv`, `evaluate/predictions.csv` (confusion matrix), `evaluate/learning_curve.csv`, `evaluate/cv.csv`, `evaluate/mistakes.json` |

With `datasheet=PATH` (the CLI's default: DATASHEET.md next to the page) the run's datasheet is
written too (`datakit.report.datasheet`) and linked near the top of the page.

The file is self-contained: inline CSS, thumbnails as JPEG data URIs, charts as inline SVG, no
script and no external URL, so it renders offline and can be mailed or archived as one file.
Thumbnails share a byte budget (`max_thumb_bytes`) so the page stays a few megabytes whatever
the dataset size; a missing image is drawn as a grey box, never as a broken <img>.

Stage manifests are read through the stage loader (`read_stage_manifest`), so folders that
store their paths relative to themselves (and were copied or moved) show their own images. The
package: `parts` (the run's files, HTML helpers, thumbnails), `charts` (SVG), `sections` (funnel,
duplicates, audit, balance), `evaluation` (training, evaluation) and the page itself here.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from datakit import __version__
from datakit.errors import DatakitError
from datakit.fsutil import atomic_write_text
from datakit.manifest import find_project_root
from datakit.report.charts import svg_line_chart
from datakit.report.datasheet import DATASHEET, build_datasheet, source_date
from datakit.report.evaluation import confusion, evaluation_section, training_section
from datakit.report.lrfind import with_lr_find
from datakit.report.metrics import headline
from datakit.report.parts import RunFiles, Thumbs, esc, html_table
from datakit.report.review import review_section
from datakit.report.sections import audit_section, balance_section, duplicates_section, funnel, funnel_section

STAGES = ("scrape", "dedup", "suspects", "curate", "split", "audit", "augment", "embed", "balance", "train", "evaluate")
VERSIONS = ("torch", "torchvision", "albumentations", "scikit-learn", "imbalanced-learn", "pandas", "pillow", "dvc")

_CSS = """
body{font:14px system-ui,sans-serif;margin:24px auto;color:#222;max-width:1160px;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:34px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 6px}
a{color:#1a5fb4}
nav a{margin-right:12px}
.meta,.sub{color:#666;font-size:12px}
.absent{background:#fff8e5;border:1px solid #e6c15c;border-radius:6px;padding:8px 12px;margin:12px 0}
.absent li{margin:2px 0}
table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #eee;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #ccc;background:#fafafa}
tr.total td,tr.total th{font-weight:bold;border-top:2px solid #ccc}
pre{background:#f6f6f6;border:1px solid #e4e4e4;border-radius:6px;padding:8px;max-height:260px;overflow:auto;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:6px 12px;min-width:110px}
.card b{display:block;font-size:20px}
.card span{color:#666;font-size:12px}
.pass{color:#1b7f2a} .fail{color:#c01c28}
.group{display:inline-block;vertical-align:top;border:1px solid #ddd;border-radius:6px;padding:6px;margin:4px 6px 4px 0}
.group.conflict{border-color:#d33}
.row{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
figure{margin:0;width:92px;font-size:11px;text-align:center;overflow-wrap:anywhere}
figure img,figure .noimg{width:88px;height:88px;object-fit:contain;background:#f4f4f4;border:2px solid #ccc;display:block}
figure .noimg{display:flex;align-items:center;justify-content:center;color:#888;font-size:10px}
figure.kept img{border-color:#2a2}
figure.dropped img{opacity:.8}
figure.wrong img{border-color:#c01c28}
.pair{display:inline-flex;gap:4px;border:1px solid #ddd;border-radius:6px;padding:4px;margin:4px}
.charts{display:flex;flex-wrap:wrap;gap:16px}
svg{background:#fff;border:1px solid #e4e4e4;border-radius:6px}
#stages td,#stages th{text-align:left}
table.cm td{min-width:34px;text-align:center;border:1px solid #fff}
table.cm td.diag{outline:2px solid #333;outline-offset:-2px}
table.cm th.rot{writing-mode:vertical-rl;text-align:left;font-weight:normal;padding:6px 2px}
"""


def params_file_for(given: Path | None) -> Path | None:
    """The params file the page shows: the one given (which must exist), else ./params.yaml when
    there is one (the file the pipeline's stages read by default), else none."""
    if given is None:
        return Path("params.yaml") if Path("params.yaml").is_file() else None
    if not Path(given).is_file():
        raise DatakitError(f"params file not found: {given}")
    return Path(given)


def stage_folders(data: Path, overrides: Mapping[str, Path] | None = None) -> dict[str, Path]:
    """`data/<stage>` for every stage name in STAGES, with `overrides` (name -> folder) replacing
    some; an unknown name is an error that lists the known ones."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(STAGES))
    if unknown:
        raise DatakitError(f"unknown stage name(s) {', '.join(unknown)}: use one of {', '.join(STAGES)}")
    return {name: Path(overrides.get(name, Path(data) / name)) for name in STAGES}


def _versions() -> list[tuple[str, str]]:
    out = [("datakit", __version__), ("python", platform.python_version())]
    for name in VERSIONS:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            if name in ("torch", "torchvision"):
                out.append((name, "not installed"))
    return out


# ---------------------------------------------------------------------------------------------


_SECTIONS = {
    "funnel": ("Counts at every stage", "scrape, dedup or split manifests"),
    "duplicates": ("Duplicates", "dedup/manifest.parquet"),
    "review": ("Label review", "reports/suspects.json or reports/curate.json"),
    "audit": ("Audit", "reports/audit.json"),
    "balance": ("Balance", "reports/balance.json"),
    "training": ("Training", "train/history.csv or reports/train.json"),
    "lr_find": ("Learning-rate range test", "lr_find.csv"),  # optional (train --lr-find): never listed as absent
    "evaluation": ("Evaluation", "evaluate/ (predictions.csv, per_class.csv, learning_curve.csv, mistakes.json) or reports/evaluate.json"),
}


def _from_page(path: Path, page: Path) -> str:
    """`path` as seen from the page's folder (relative: the page can move with its project)."""
    return Path(os.path.relpath(Path(path).absolute(), Path(page).absolute().parent)).as_posix()


def build_report(stages: Mapping[str, Path], reports_dir: Path | None, out: Path, *, root: Path | None = None,
                 params_file: Path | None = None, title: str = "datakit run report", largest_groups: int = 12,
                 max_conflict_groups: int = 40, max_pairs: int = 8, max_mistakes: int = 16,
                 max_thumb_bytes: int = 3_000_000, datasheet: Path | None = None,
                 project: Path | None = None) -> dict[str, Any]:
    """Write the run's page to `out` and return what it holds.

    `stages` maps stage names (see STAGES; `stage_folders` builds it) to folders, which may not
    exist; `reports_dir` holds the stages' `<stage>.json`; `root` is the folder manifest paths
    are relative to (default: `find_project_root` of the first stage folder that exists).
    Returns {"path", "bytes", "thumbnails", "sections": {name: bool}, "absent": [...], "notes":
    [...], plus each present section's figures under its name}. Raises DatakitError when nothing
    at all is found, or when a file that is there cannot be read.

    With `datasheet` (a path), DATASHEET.md is written there too (see `datakit.report.datasheet`:
    `project` is the folder git, dvc.lock and .dvc/config are read from)
    and the page links to it; its figures are under "datasheet"."""
    stages = {k: Path(v) for k, v in stages.items()}
    reports_dir = Path(reports_dir) if reports_dir is not None else None
    existing = [p for p in stages.values() if p.is_dir()]
    has_reports = reports_dir is not None and any(reports_dir.glob("*.json"))
    if not existing and not has_reports:
        raise DatakitError("nothing to report: none of the stage folders "
                           f"({', '.join(str(p) for p in stages.values()) or 'none given'}) exists and "
                           f"{reports_dir or 'no reports folder'} holds no <stage>.json")
    if root is None:  # the core's rule for a stage folder; with no folder no image is read
        root = find_project_root(existing[0]) if existing else Path(reports_dir or ".").absolute()
    params_text = None
    if params_file is not None:
        from datakit.params import read_params_text

        params_text = read_params_text(Path(params_file))  # one line naming the file if unreadable or not UTF-8
    run = RunFiles(stages, reports_dir, Path(root))
    thumbs = Thumbs(Path(root), max_thumb_bytes)
    notes: list[str] = []
    built: dict[str, tuple[str, dict[str, Any]] | None] = {
        "funnel": funnel_section(run, notes),
        "duplicates": duplicates_section(run, thumbs, largest_groups, max_conflict_groups),
        "audit": audit_section(run, thumbs, max_pairs),
        "balance": balance_section(run),
        "training": training_section(run),
        "evaluation": evaluation_section(run, thumbs, max_mistakes),
    }
    review = review_section(run)  # an optional branch: shown when suspects/curate ran, never listed as absent
    if review is not None:
        built = {"funnel": built["funnel"], "duplicates": built["duplicates"], "review": review,
                 **{k: v for k, v in built.items() if k not in ("funnel", "duplicates")}}
    built = with_lr_find(built, run)
    absent = [f"{_SECTIONS[k][0]}: no {_SECTIONS[k][1]}" for k, v in built.items() if v is None]
    if thumbs.used >= max_thumb_bytes:
        notes.append(f"thumbnail budget ({max_thumb_bytes:,} bytes) reached: later images are drawn as boxes")

    sheet = None
    if datasheet is not None:
        sheet = build_datasheet(run, Path(datasheet), project=project, params_text=params_text,
                                params_name=Path(params_file).name if params_file is not None else "params.yaml",
                                html=Path(out))
    when = source_date()
    nav = " ".join(f'<a href="#{k}">{esc(_SECTIONS[k][0])}</a>' for k, v in built.items() if v is not None)
    stage_rows = [[k, str(v) if v.is_dir() else "–", "found" if run.report(k) is not None else "–"] for k, v in stages.items()]
    header = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<meta name='viewport' content='width=device-width'><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        # no wall-clock time (unless SOURCE_DATE_EPOCH) and no absolute path: the page is a pipeline
        # output, the same wherever and whenever the same data makes it
        f'<p class="meta">{f"generated {esc(when)} · " if when else ""}project root {esc(_from_page(Path(root), out))}'
        f"{f' · reports {esc(_from_page(reports_dir, out))}' if reports_dir else ''}</p>",
        f"<nav>{nav}</nav>",
    ]
    if datasheet is not None:
        rel = Path(os.path.relpath(Path(datasheet).absolute(), Path(out).absolute().parent)).as_posix()
        header.append(f'<p class="meta" id="datasheet-link">Datasheet of this dataset version: <a href="{esc(rel)}">'
                      f"{esc(rel)}</a></p>")
    if absent:
        header.append('<div class="absent" id="absent"><b>Not in this run</b><ul>'
                      + "".join(f"<li>{esc(a)}</li>" for a in absent) + "</ul></div>")
    if notes:
        header.append('<div class="absent" id="notes"><b>Notes</b><ul>' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul></div>")
    header.append('<h2 id="run">Run</h2><div class="charts"><div><h3>Versions</h3>'
                  + html_table(["package", "version"], _versions(), table_id="versions")
                  + "</div><div><h3>Stages</h3>" + html_table(["stage", "folder", "report (<stage>.json)"],
                                                          stage_rows, table_id="stages") + "</div></div>")
    if params_text is not None:
        header.append(f"<h3>{esc(params_file)}</h3><pre id='params'>{esc(params_text)}</pre>")
    body = [v[0] for v in built.values() if v is not None]
    page = "\n".join([*header, *body, "</body></html>"]) + "\n"
    out = Path(out)
    atomic_write_text(out, page)
    result: dict[str, Any] = {
        "path": str(out), "bytes": len(page.encode("utf-8")), "thumbnails": thumbs.count,
        "sections": {k: v is not None for k, v in built.items()}, "absent": absent, "notes": notes,
    }
    result.update({k: v[1] for k, v in built.items() if v is not None})
    result["metrics"] = headline(run.report)  # the scalars DVC shows (`datakit report --metrics`)
    if sheet is not None:  # its headline figures (the git state stays in the file)
        result["datasheet"] = {k: sheet.get(k) for k in ("path", "bytes", "images", "classes", "cautions")}
    return result


_Thumbs = Thumbs  # the name tests/unit/test_manifest.py imports

__all__ = ["DATASHEET", "STAGES", "build_datasheet", "Thumbs", "build_report", "params_file_for", "confusion", "funnel", "stage_folders", "svg_line_chart"]
