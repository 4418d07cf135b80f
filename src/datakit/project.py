"""`datakit init [DIR]`: a new datakit project in one command.

Writes the flagship pipeline (`dvc.yaml`, the same stages as datakit's own, without the
dependencies on datakit's source, which a user's project does not hold), a commented
`params.yaml` (every knob with its default), an empty `review/decisions.csv` (a dependency of
`curate`), `.gitignore`/`.dvcignore` lines for datakit's caches, and runs `git init` and
`dvc init` when the folder is not a repository yet. Nothing that exists is overwritten unless
`force`. The templates are package data (`datakit/templates/*.in`: a file named dvc.yaml anywhere in a
repository is a pipeline to DVC), kept equal to the repository's
own `dvc.yaml` and `params.yaml` by a test.

Offline plots: `dvc plots show` writes a page that loads vega from a CDN, blank without a network.
`install_plot_templates` copies datakit's page with vega inlined (`templates/dvc_plots.html`, built
by tools/build_plots_template.py) to `.dvc/plots/datakit.html`, points DVC's `plots.html_template`
at it, and copies datakit's vega-lite plot templates (`templates/plots/*.json`, e.g. `epochs`) to
`.dvc/plots/`, where a dvc.yaml `template: epochs` finds them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from datakit.errors import DatakitError
from datakit.fsutil import atomic_write_bytes

DECISIONS_HEADER = "image_id,action,label,reason,decided_at\n"
IGNORES = {".gitignore": [".datakit/", "dvc_plots/", "*.run.json"], ".dvcignore": [".datakit/"]}
PLOTS_DIR = "plots"  # DVC's folder of custom plot templates, inside .dvc/
PLOTS_PAGE = "datakit.html"  # the offline page's name there
PLOTS_KEY = "html_template"  # in the [plots] section of .dvc/config
NEXT = [
    "datakit scrape --params params.yaml --out data/scrape --dry-run   (the queries and settings, nothing fetched)",
    "dvc repro                                                         (scrape -> ... -> report)",
    "datakit review data/suspects                                      (then `dvc repro` applies your decisions)",
]


def strip_code_deps(dvc_yaml: str) -> str:
    """datakit's own dvc.yaml without its `${src}` dependencies and `vars` (for a user's project)."""
    out: list[str] = []
    for line in dvc_yaml.split("\n"):
        if line.startswith("vars:") or line.strip().startswith("- src:"):
            continue
        m = re.match(r"^(\s+deps: \[)(.*)\]$", line)
        if m:
            kept = [x.strip() for x in m.group(2).split(",") if "${src}" not in x]
            if not kept:
                continue
            line = m.group(1) + ", ".join(kept) + "]"
        out.append(line)
    text = "\n".join(out)
    return re.sub(r"# Each stage lists the params keys it reads and the source its command runs.*?sets it\)\.\n",
                  "# Each stage lists the params keys it reads. Written by `datakit init` (the datakit code itself is\n"
                  "# not a dependency here: pin its version in your requirements).\n",
                  text, flags=re.S)


def template(name: str) -> str:
    """A template file: `templates/<name>.in` (not named dvc.yaml, so DVC never reads it as a pipeline)."""
    return resources.files("datakit").joinpath("templates", name + ".in").read_text(encoding="utf-8")


def _package_file(*parts: str) -> Path:
    return Path(str(resources.files("datakit").joinpath("templates", *parts)))


def plot_templates() -> dict[str, Path]:
    """datakit's vega-lite templates for DVC, by file name (`epochs.json`, ...)."""
    folder = _package_file("plots")
    return {p.name: p for p in sorted(folder.iterdir()) if p.suffix == ".json"}


def plots_page() -> Path:
    """The offline `dvc plots show` page (vega, vega-lite and vega-embed inlined)."""
    return _package_file("dvc_plots.html")


def _html_template_setting(dvc_dir: Path, value: str, overwrite: bool) -> str:
    """Set `plots.html_template` in `dvc_dir/config` (DVC resolves it relative to `dvc_dir`).
    Returns "same", "written", or "kept" (a different value was there and not `overwrite`)."""
    from dvc.config import Config, ConfigError

    try:
        conf = Config(dvc_dir=str(dvc_dir), validate=False)
        current = conf.load_one("repo").get("plots", {}).get(PLOTS_KEY)
        if current == value:
            return "same"
        if current is not None and not overwrite:
            return "kept"
        with conf.edit("repo") as repo_conf:
            repo_conf.setdefault("plots", {})[PLOTS_KEY] = value
    except ConfigError as exc:
        raise DatakitError(f"{dvc_dir / 'config'}: {exc}") from None
    return "written"


def install_plot_templates(dvc_dir: Path, *, overwrite: bool = True, link: bool = False) -> tuple[list[str], list[str]]:
    """Make `dvc plots show` work offline in the DVC project whose `.dvc` folder is `dvc_dir`:
    datakit's plot templates go to `dvc_dir/plots/`, and `plots.html_template` points at the page
    with vega inlined. Copies by default (a user's project commits them); with `link`, relative
    symlinks to the package's own files and a config path to its page, for a source checkout of
    datakit that should not hold second copies. Returns (written, kept): paths relative to
    `dvc_dir`'s parent; a differing file or setting is kept unless `overwrite`."""
    dvc_dir = Path(dvc_dir)
    if not (dvc_dir / "config").is_file():
        raise DatakitError(f"{dvc_dir} is not a DVC folder (no config in it): run `dvc init` first")
    page = plots_page()
    if link and any(part in ("site-packages", "dist-packages") for part in page.parts):
        raise DatakitError(f"--link needs datakit installed from a source checkout (editable); it is at {page.parent}")
    target = dvc_dir / PLOTS_DIR
    target.mkdir(exist_ok=True)
    real_target = target.resolve()
    files = dict(plot_templates())
    if not link:
        files[PLOTS_PAGE] = page
    written: list[str] = []
    kept: list[str] = []
    shown = dvc_dir.name + "/" + PLOTS_DIR + "/"
    for name, src in files.items():
        dst = target / name
        if link:
            rel = os.path.relpath(src.resolve(), real_target)
            if dst.is_symlink() and os.readlink(dst) == rel:
                continue
        elif dst.is_file() and not dst.is_symlink() and dst.read_bytes() == src.read_bytes():
            continue
        if dst.exists() or dst.is_symlink():
            if not overwrite:
                kept.append(shown + name)
                continue
            dst.unlink()
        if link:
            dst.symlink_to(rel)
        else:
            atomic_write_bytes(dst, src.read_bytes())
        written.append(shown + name)
    value = os.path.relpath(page.resolve(), dvc_dir.resolve()).replace(os.sep, "/") if link else f"{PLOTS_DIR}/{PLOTS_PAGE}"
    state = _html_template_setting(dvc_dir, value, overwrite)
    if state == "written":
        written.append(f"{dvc_dir.name}/config (plots.{PLOTS_KEY} = {value})")
    elif state == "kept":
        kept.append(f"{dvc_dir.name}/config (plots.{PLOTS_KEY})")
    return written, kept


@dataclass
class InitResult:
    folder: Path
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)  # noqa: S603 - our own git/dvc
    if proc.returncode != 0:
        raise DatakitError(f"`{' '.join(cmd)}` failed in {cwd}: {(proc.stderr or proc.stdout).strip()[-500:]}")


def init_project(folder: Path, *, provider: str | None = None, force: bool = False, git: bool = True,
                 dvc: bool = True, plots: bool = True) -> InitResult:
    """Create (or complete) a datakit project in `folder`; with `plots`, DVC set up for offline plots."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    res = InitResult(folder)
    params = template("params.yaml")
    if provider:
        params, n = re.subn(r"(?m)^(  provider: )\S+", rf"\g<1>{provider}", params, count=1)
        if not n:
            raise DatakitError("the params template has no scrape.provider line")
    files = {"dvc.yaml": template("dvc.yaml"), "params.yaml": params, "review/decisions.csv": DECISIONS_HEADER}
    for name, text in files.items():
        path = folder / name
        if path.exists() and not force:
            res.kept.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        res.written.append(name)
    for name, lines in IGNORES.items():
        path = folder / name
        have = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        missing = [x for x in lines if x not in have]
        if missing:
            path.write_text("\n".join([*have, *missing]) + "\n", encoding="utf-8")
            res.written.append(name)
    if git and not (folder / ".git").exists():
        exe = shutil.which("git")
        if exe is None:
            raise DatakitError("git is not installed: install it, or run `datakit init --no-git`")
        _run([exe, "init", "-q"], folder)
        res.ran.append("git init")
    if dvc and not (folder / ".dvc").exists():
        _run([sys.executable, "-m", "dvc", "init", "-q"] + ([] if (folder / ".git").exists() else ["--no-scm"]), folder)
        res.ran.append("dvc init")
    if plots and (folder / ".dvc").is_dir():
        written, kept = install_plot_templates(folder / ".dvc", overwrite=force)
        res.written += written
        res.kept += kept
    return res
