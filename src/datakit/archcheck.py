"""The architecture's rules, checked on the source text: the import graph of `datakit` read with
`ast` (nothing is imported, so a module that needs torch or albumentations costs nothing here).

Why a checker rather than a review habit: the stage contract (ARCHITECTURE.md, "The stage
contract" and "Families") only holds while nobody adds the one convenient import from another
stage, and DVC only re-runs a stage when a file its command runs is listed in its `deps`. Both
drift silently; this module names every offending import, file and stage.

    python -m datakit.archcheck           every rule; exit 1 and one line per violation
    python -m datakit.archcheck --deps    the `deps` under src each dvc.yaml stage should list

Families (imports are allowed inside a family, and from any family into core):

- core: errors, console, fsutil, manifest, images, params, parallel, models, stage, vectors,
  graph, faults and the `datakit` package itself; core imports only core;
- composition root: `cli/` and `__main__` (the entry point): may import anything, and nothing
  else imports them;
- near-duplicates: `dedup/` and `audit`; learning: `train/` (and `evaluate`, `predict` while
  they live beside it); acquisition: `scrape/`; balance: `balance` (with `smote` and
  `balance_report` until they move into a `balance/` package);
- every other stage (split, augment, embed, colors, export, report, verify, ...) is a family of
  its own: a module not named here is a new stage, not a new core module.
"""

from __future__ import annotations

import ast
import os
import shlex
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "datakit"
SRC = Path(__file__).resolve().parent
REPO = SRC.parents[1]
CORE = frozenset({"errors", "console", "fsutil", "manifest", "images", "params", "parallel", "models", "stage",
                  "vectors", "graph", "faults", "archcheck"})
ROOT = "cli"  # the composition root's family name
ENTRY = frozenset({"cli", "__main__"})
FAMILIES = {"dedup": "near-duplicates", "audit": "near-duplicates", "train": "learning", "evaluate": "learning",
            "predict": "learning", "scrape": "acquisition", "balance": "balance", "smote": "balance",
            "balance_report": "balance"}
MAX_LINES = 600
LONG_MODULES = frozenset({"datakit.dedup.index", "datakit.scrape.synthetic_render"})
DVC_FILES = ("dvc.yaml", "pipelines/demo/dvc.yaml")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        """The package relative imports in this module start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass(frozen=True)
class Import:
    """One import of a datakit module (or of names from it) by another datakit module."""

    source: str
    target: str
    names: tuple[str, ...]
    line: int
    lazy: bool  # inside a function: runs only when the function does, but it still couples
    type_only: bool  # under `if TYPE_CHECKING:`: never runs, still couples

    def where(self, graph: Graph) -> str:
        return f"{graph.relpath(self.source)}:{self.line}"


@dataclass
class Graph:
    """Every datakit module and every import between them."""

    src: Path
    modules: dict[str, Module]
    imports: list[Import] = field(default_factory=list)
    private_uses: list[tuple[str, int, str]] = field(default_factory=list)  # (module, line, "mod._name")

    def relpath(self, module: str) -> str:
        return self.modules[module].path.relative_to(self.src.parent).as_posix()

    def of(self, module: str) -> list[Import]:
        return [i for i in self.imports if i.source == module]


def family(module: str) -> str:
    """The family a datakit module belongs to (see the module docstring)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "core"
    top = parts[1]
    if top in CORE:
        return "core"
    if top in ENTRY:
        return ROOT
    return FAMILIES.get(top, top)


def discover(src: Path = SRC) -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if "__pycache__" in rel.parts:
            continue
        parts = [PACKAGE, *rel.with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def _resolve(modules: dict[str, Module], dotted: str) -> str | None:
    """The longest prefix of `dotted` that is a datakit module (None outside datakit)."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, *, lazy: bool = False, type_only: bool = False) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every node under `node` with whether it sits in a function and under TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        yield child, lazy, type_only
        inner_lazy = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, inner_lazy, True
                yield from _walk(stmt, lazy=inner_lazy, type_only=True)
            for stmt in child.orelse:
                yield stmt, inner_lazy, type_only
                yield from _walk(stmt, lazy=inner_lazy, type_only=type_only)
            continue
        yield from _walk(child, lazy=inner_lazy, type_only=type_only)


def _imports_of(mod: Module, modules: dict[str, Module], tree: ast.AST) -> tuple[list[Import], list[tuple[str, int, str]]]:
    found: list[Import] = []
    aliases: dict[str, str] = {}  # local name -> datakit module it is bound to
    attrs: list[tuple[int, str, str]] = []
    for node, lazy, type_only in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(modules, alias.name)
                if target is None:
                    continue
                found.append(Import(mod.name, target, (), node.lineno, lazy, type_only))
                if alias.asname:
                    aliases[alias.asname] = target
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                dotted = ".".join([*base, node.module] if node.module else base)
            else:
                dotted = node.module or ""
            target = _resolve(modules, dotted)
            if target is None or target != dotted:
                continue  # not datakit (or a missing module: nothing to check)
            names: list[str] = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # `from datakit.dedup import hashing`: the module itself
                    found.append(Import(mod.name, sub, (), node.lineno, lazy, type_only))
                    aliases[alias.asname or alias.name] = sub
                else:
                    names.append(alias.name)
            if names:
                found.append(Import(mod.name, target, tuple(names), node.lineno, lazy, type_only))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr):
            attrs.append((node.lineno, node.value.id, node.attr))
    private_uses = [(mod.name, line, f"{aliases[name]}.{attr}") for line, name, attr in attrs
                    if name in aliases and aliases[name] != mod.name]
    return found, private_uses


def build(src: Path = SRC) -> Graph:
    """The import graph of the package at `src`, from its source text."""
    modules = discover(src)
    graph = Graph(src, modules)
    for mod in modules.values():
        tree = ast.parse(mod.path.read_text(encoding="utf-8"), filename=str(mod.path))
        found, private = _imports_of(mod, modules, tree)
        graph.imports.extend(found)
        graph.private_uses.extend(private)
    return graph


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# ------------------------------------------------------------------------------------- the rules


def cross_family_imports(graph: Graph) -> list[str]:
    """Imports that break the families: a stage importing another family's stage, core importing
    a stage, anyone but the composition root importing `cli` (lazy and type-only imports count:
    they couple the modules just the same)."""
    bad = []
    for imp in graph.imports:
        src, dst = family(imp.source), family(imp.target)
        if src == ROOT or src == dst or dst == "core":
            continue
        kind = "core -> stage" if src == "core" else ("-> cli" if dst == ROOT else "stage -> stage")
        how = " (type-only)" if imp.type_only else (" (lazy)" if imp.lazy else "")
        names = f" ({', '.join(imp.names)})" if imp.names else ""
        bad.append(f"{imp.where(graph)}: {kind}{how}: {imp.source} [{src}] imports {imp.target}{names} [{dst}]")
    return bad


def private_imports(graph: Graph) -> list[str]:
    """Private names (one leading underscore; dunders such as __version__ are public) taken from
    another module, by `from x import _y` or `x._y`. A private module may be imported inside its
    own package."""
    bad = []
    for imp in graph.imports:
        for name in imp.names:
            if _private(name):
                bad.append(f"{imp.where(graph)}: {imp.source} imports private {imp.target}.{name}")
        last = imp.target.rpartition(".")[2]
        if not imp.names and _private(last) and not imp.source.startswith(imp.target.rpartition(".")[0] + "."):
            bad.append(f"{imp.where(graph)}: {imp.source} imports private module {imp.target}")
    for module, line, dotted in graph.private_uses:
        bad.append(f"{graph.relpath(module)}:{line}: {module} uses private {dotted}")
    return bad


def long_modules(graph: Graph, limit: int = MAX_LINES, allowed: Iterable[str] = LONG_MODULES) -> list[str]:
    """Modules over `limit` lines, but for the named exceptions."""
    allowed = set(allowed)
    bad = []
    for mod in graph.modules.values():
        n = len(mod.path.read_text(encoding="utf-8").splitlines())
        if n > limit and mod.name not in allowed:
            bad.append(f"{graph.relpath(mod.name)}: {n} lines (limit {limit})")
    return bad


def import_cycles(graph: Graph) -> list[str]:
    """Cycles among modules through imports that run at import time (module level, not type-only):
    those are the ones that break on import order."""
    edges: dict[str, set[str]] = {m: set() for m in graph.modules}
    for imp in graph.imports:
        if not imp.lazy and not imp.type_only and imp.source != imp.target:
            edges[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted(edges):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    # A package importing its own submodules (and they the package) is how packages re-export.
    return [" <-> ".join(c) for c in cycles
            if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]


# ------------------------------------------------------------------------------- DVC stage deps


@dataclass(frozen=True)
class DvcStage:
    file: Path
    name: str
    command: str
    deps: tuple[str, ...]  # as written, ${vars} substituted
    src_deps: tuple[Path, ...]  # the deps that lie under the package source, resolved


def dvc_stages(dvc_file: Path, src: Path = SRC) -> list[DvcStage]:
    """The `datakit` stages of one dvc.yaml, with their deps resolved against its folder."""
    import yaml

    doc = yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}
    variables: dict[str, Any] = {}
    for entry in doc.get("vars", []) or []:
        if isinstance(entry, dict):
            variables.update(entry)
    src = src.resolve()
    stages = []
    for name, spec in (doc.get("stages") or {}).items():
        words = shlex.split(str(spec.get("cmd", "")))
        if "datakit" not in words:
            continue
        args = [w for w in words[words.index("datakit") + 1:]]
        command = next((w for w in args if not w.startswith("-")), "")
        deps = []
        for dep in spec.get("deps", []) or []:
            text = str(dep)
            for key, value in variables.items():
                text = text.replace("${" + key + "}", str(value))
            deps.append(text)
        src_deps = []
        for dep in deps:
            path = Path(os.path.normpath(dvc_file.parent.resolve() / dep))
            if path == src or src in path.parents:
                src_deps.append(path)
        stages.append(DvcStage(dvc_file, name, command, tuple(deps), tuple(src_deps)))
    return stages


def _command_roots(graph: Graph, command: str) -> tuple[str, list[Import]]:
    """The cli module that defines `datakit <command>` and the imports its run can execute: the
    module's own, less those inside the bodies of its other commands."""
    for name, mod in sorted(graph.modules.items()):
        if family(name) != ROOT:
            continue
        tree = ast.parse(mod.path.read_text(encoding="utf-8"))
        commands = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                cmd = _command_name(node)
                if cmd is not None:
                    commands[cmd] = node
        whole_module = name == f"{PACKAGE}.cli.{command}"
        if command not in commands and not whole_module:
            continue
        skip = set() if whole_module else {
            (n.lineno, n.end_lineno) for c, n in commands.items() if c != command}
        kept = [i for i in graph.of(name) if not any(a <= i.line <= (b or a) for a, b in skip)]
        return name, kept
    raise LookupError(f"no cli module defines the command {command!r}")


def _command_name(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The typer command name a decorated function registers (None: not a command)."""
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) and deco.func.attr == "command":
            for arg in deco.args[:1]:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    return arg.value
            for kw in deco.keywords:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    return str(kw.value.value)
            return node.name.replace("_", "-")
    return None


def reached(graph: Graph, command: str) -> set[str]:
    """Every datakit module `datakit <command>` can run: the closure of its cli module's imports
    (lazy ones included, type-only ones not) with each module's parent packages, whose
    `__init__` runs first."""
    root, first = _command_roots(graph, command)
    seen = {root}
    todo = [i.target for i in first if not i.type_only]
    while todo:
        mod = todo.pop()
        parts = mod.split(".")
        for k in range(1, len(parts) + 1):
            name = ".".join(parts[:k])
            if name in graph.modules and name not in seen:
                seen.add(name)
                # Another command's module (reached through the `cli` package, which registers
                # every command) runs only its module-level imports: its command does not run.
                startup_only = family(name) == ROOT and _defines_commands(graph, name)
                todo.extend(i.target for i in graph.of(name) if not i.type_only and not (startup_only and i.lazy))
    return seen


def _defines_commands(graph: Graph, module: str) -> bool:
    tree = ast.parse(graph.modules[module].path.read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _command_name(n) is not None
               for n in ast.walk(tree)) or module == f"{PACKAGE}.cli"


def dep_path(graph: Graph, module: str) -> str:
    """What a dvc.yaml lists for `module`, relative to the package: a family's folder for a module
    inside a package (`dedup`), the file for a plain module (`split.py`)."""
    rel = graph.modules[module].path.relative_to(graph.src)
    return rel.parts[0] if len(rel.parts) > 1 else rel.as_posix()


@dataclass
class StageDeps:
    stage: DvcStage
    needed: list[str]  # dep paths relative to the package, sorted
    missing: list[str]  # modules reached but not covered by a listed dep
    stale: list[str]  # listed src deps that do not exist or cover no module the command runs


def shared_core(graph: Graph, commands: Iterable[str]) -> set[str]:
    """Core modules every one of `commands` runs: exempt from the deps rule (every stage depends
    on them alike; listing them everywhere would only make every edit re-run every stage)."""
    sets = [{m for m in reached(graph, c) if family(m) == "core"} for c in commands]
    return set.intersection(*sets) if sets else set()


def stage_deps(graph: Graph, dvc_files: Iterable[Path]) -> list[StageDeps]:
    """For each `datakit` stage of `dvc_files`: the deps under src it must list and what it lacks.

    The rule: a stage's deps under src must cover every module its command runs (see `reached`)
    but for the cli modules (thin by contract; decisions live in the stage and params) and the
    core modules that every stage runs (`shared_core`). A core module only some stages run
    (models.py, vectors.py, ...) is listed by those stages. A listed src dep must exist and cover
    at least one module the command runs (non-Python folders such as palettes/ are data and left
    alone)."""
    stages = [s for f in dvc_files for s in dvc_stages(f, graph.src)]
    exempt = shared_core(graph, {s.command for s in stages})
    out = []
    for st in stages:
        mods = reached(graph, st.command)
        required = sorted(m for m in mods if family(m) != ROOT and m not in exempt)
        needed = sorted({dep_path(graph, m) for m in required})
        missing = [m for m in required
                   if not any(p == graph.modules[m].path or p in graph.modules[m].path.parents for p in st.src_deps)]
        stale = []
        for p in st.src_deps:
            shown = p.relative_to(graph.src).as_posix()
            if not p.exists():
                stale.append(f"{shown} (does not exist)")
            elif (p.suffix == ".py" or any(p.rglob("*.py"))) and not any(
                    graph.modules[m].path == p or p in graph.modules[m].path.parents for m in mods):
                stale.append(f"{shown} (the command runs none of it)")
        out.append(StageDeps(st, needed, missing, stale))
    return out


def _by_dep(graph: Graph, modules: Iterable[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for m in modules:
        grouped.setdefault(dep_path(graph, m), []).append(m)
    return grouped


def deps_problems(graph: Graph, dvc_files: Iterable[Path]) -> list[str]:
    bad = []
    for sd in stage_deps(graph, dvc_files):
        where = _shown(sd.stage.file)
        for dep, mods in _by_dep(graph, sd.missing).items():
            bad.append(f"{where}: stage {sd.stage.name}: `datakit {sd.stage.command}` runs "
                       f"{', '.join(graph.relpath(m) for m in mods)}: list ${{src}}/{dep} in its deps")
        for s in sd.stale:
            bad.append(f"{where}: stage {sd.stage.name}: dep ${{src}}/{s}")
    return bad


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def default_dvc_files(repo: Path = REPO) -> list[Path]:
    return [repo / f for f in DVC_FILES if (repo / f).exists()]


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
    }


def print_deps(src: Path = SRC, dvc_files: Iterable[Path] | None = None) -> None:
    graph = build(src)
    files = list(dvc_files) if dvc_files is not None else default_dvc_files()
    stages = stage_deps(graph, files)
    exempt = shared_core(graph, {sd.stage.command for sd in stages})
    print("core modules every stage runs (exempt): " + ", ".join(sorted(m.removeprefix(PACKAGE + ".") for m in exempt)))
    current = None
    for sd in stages:
        if sd.stage.file != current:
            current = sd.stage.file
            print(f"\n{_shown(current)}:")
        listed = "" if not (sd.missing or sd.stale) else "   # now lacks: " + ", ".join(
            _by_dep(graph, sd.missing)) + "".join(f"; stale: {s}" for s in sd.stale)
        deps = ", ".join(f'"${{src}}/{d}"' for d in sd.needed)
        print(f"  {sd.stage.name} (datakit {sd.stage.command}): [{deps}]{listed}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
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


if __name__ == "__main__":
    sys.exit(main())
