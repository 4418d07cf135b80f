"""`datakit init [DIR]`: a new datakit project in one command.

Writes the flagship pipeline (`dvc.yaml`, the same stages as datakit's own, without the
dependencies on datakit's source, which a user's project does not hold), a commented
`params.yaml` (every knob with its default), an empty `review/decisions.csv` (a dependency of
`curate`), `.gitignore`/`.dvcignore` lines for datakit's caches, and runs `git init` and
`dvc init` when the folder is not a repository yet. Nothing that exists is overwritten unless
`force`. The templates are package data (`datakit/templates/*.in`: a file named dvc.yaml anywhere in a
repository is a pipeline to DVC), kept equal to the repository's
own `dvc.yaml` and `params.yaml` by a test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from datakit.errors import DatakitError

DECISIONS_HEADER = "image_id,action,label,reason,decided_at\n"
IGNORES = {".gitignore": [".datakit/"], ".dvcignore": [".datakit/"]}
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
    return re.sub(r"# Each stage lists the params keys it reads and the source its command runs.*?metrics land in reports/\*\.json\.",
                  "# Each stage lists the params keys it reads; metrics land in reports/*.json. Written by `datakit init`\n"
                  "# (the datakit code itself is not a dependency here: pin its version in your requirements).",
                  text, flags=re.S)


def template(name: str) -> str:
    """A template file: `templates/<name>.in` (not named dvc.yaml, so DVC never reads it as a pipeline)."""
    return resources.files("datakit").joinpath("templates", name + ".in").read_text(encoding="utf-8")


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
                 dvc: bool = True) -> InitResult:
    """Create (or complete) a datakit project in `folder`."""
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
    return res
