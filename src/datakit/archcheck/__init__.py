"""The architecture's rules, checked on the source text: the import graph of `datakit` read with
`ast` (nothing is imported, so a module that needs torch or albumentations costs nothing here).

Why a checker rather than a review habit: the stage contract (ARCHITECTURE.md, "The stage
contract" and "Families") only holds while nobody adds the one convenient import from another
stage, and DVC only re-runs a stage when a file its command runs is listed in its `deps`. Both
drift silently; this package names every offending import, file and stage.

    python -m datakit.archcheck           every rule; exit 1 and one line per violation
    python -m datakit.archcheck --deps    the `deps` under src each dvc.yaml stage should list
    python -m datakit.archcheck --write-deps    set them (and add the params sections each
                                                stage reads) in both dvc.yaml files

Families (imports are allowed inside a family, and from any family into core):

- core: errors, console, fsutil, manifest, images, params, parallel, models, stage, vectors,
  graph, faults, licences, the `datakit` package itself and this checker; core imports only core;
- composition root: `cli/` and `__main__` (the entry point): may import anything, and nothing
  else imports them;
- near-duplicates: `dedup/` and `audit`; learning: `train/` (and `evaluate`, `predict` while
  they live beside it); acquisition: `scrape/`; balance: `balance` (with `smote` and
  `balance_report` until they move into a `balance/` package);
- every other stage (split, augment, embed, colors, export, report, verify, ...) is a family of
  its own: a module not named here is a new stage, not a new core module.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from datakit.archcheck.dvc import (
    DVC_FILES,
    DvcStage,
    StageDeps,
    default_dvc_files,
    dep_path,
    deps_problems,
    dvc_stages,
    params_problems,
    print_deps,
    reached,
    rewritten_deps,
    sections_read,
    shared_core,
    shown_path,
    stage_deps,
)
from datakit.archcheck.graph import (
    CORE,
    ENTRY,
    FAMILIES,
    LONG_MODULES,
    MAX_LINES,
    PACKAGE,
    REPO,
    ROOT,
    SRC,
    Graph,
    Import,
    Module,
    build,
    cross_family_imports,
    discover,
    family,
    import_cycles,
    long_modules,
    private_imports,
)

__all__ = ["CORE", "DVC_FILES", "ENTRY", "FAMILIES", "LONG_MODULES", "MAX_LINES", "PACKAGE", "REPO", "ROOT", "SRC",
           "DvcStage", "Graph", "Import", "Module", "StageDeps", "build", "check", "cross_family_imports",
           "default_dvc_files", "dep_path", "deps_problems", "discover", "dvc_stages", "family", "import_cycles",
           "long_modules", "main", "params_problems", "print_deps", "private_imports", "reached", "rewritten_deps", "sections_read", "shared_core",
           "shown_path", "stage_deps"]


def check(src: Path = SRC, dvc_files: Iterable[Path] | None = None) -> dict[str, list[str]]:
    """Every rule's violations, by rule."""
    graph = build(src)
    files = list(dvc_files) if dvc_files is not None else default_dvc_files()
    return {
        "imports across families": cross_family_imports(graph),
        "private names across modules": private_imports(graph),
        f"modules over {MAX_LINES} lines": long_modules(graph),
        "import cycles": import_cycles(graph),
        "dvc deps": deps_problems(graph, files),
        "dvc params": params_problems(graph, files),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--write-deps" in args:
        graph = build()
        for f in default_dvc_files():
            new = rewritten_deps(graph, f)
            if new != f.read_text(encoding="utf-8"):
                f.write_text(new, encoding="utf-8")
                print(f"updated {shown_path(f)}")
        return 0
    if "--deps" in args:
        print_deps()
        return 0
    failed = 0
    for rule, problems in check().items():
        print(f"{rule}: {len(problems)}")
        for line in problems:
            print(f"  {line}")
        failed += len(problems)
    return 1 if failed else 0
