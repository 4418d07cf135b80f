"""The import graph of `datakit` from its source text, and the rules on it (see the package
docstring for the families)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "datakit"
SRC = Path(__file__).resolve().parents[1]  # src/datakit
REPO = SRC.parents[1]
CORE = frozenset({"errors", "console", "fsutil", "manifest", "images", "params", "parallel", "models", "stage",
                  "vectors", "graph", "faults", "licences", "archcheck"})
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
