"""The DVC side: which datakit modules each `dvc.yaml` stage's command runs, and whether its
`deps` list them (the rule is in `stage_deps`)."""

from __future__ import annotations

import ast
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datakit.archcheck.graph import PACKAGE, REPO, ROOT, SRC, Graph, Import, build, family

DVC_FILES = ("dvc.yaml", "pipelines/demo/dvc.yaml")


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
    variables = _vars(dvc_file)
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
    name, _, others = _command_node(graph, command)
    kept = [i for i in graph.of(name) if not any(a <= i.line <= (b or a) for a, b in others)]
    return name, kept


def _command_node(graph: Graph, command: str) -> tuple[str, ast.AST, list[tuple[int, int | None]]]:
    """(cli module, the AST that runs for `datakit <command>`: its function, or the whole module
    when it is not found by name, the line spans of the module's other commands)."""
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
        own_module = name == f"{PACKAGE}.cli.{command}"
        if command not in commands and not own_module:
            continue
        # `datakit dedup INPUT` is the group's default subcommand `run`; `dedup calibrate` is not.
        chosen = command if command in commands else ("run" if "run" in commands else None)
        others = [(n.lineno, n.end_lineno) for c, n in commands.items() if chosen is not None and c != chosen]
        return name, (commands[chosen] if chosen is not None else tree), others
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
    error: str | None = None  # the command is not found in cli/


def shared_core(graph: Graph, commands: Iterable[str]) -> set[str]:
    """Core modules every one of `commands` runs: exempt from the deps rule (every stage depends
    on them alike; listing them everywhere would only make every edit re-run every stage)."""
    sets = [{m for m in mods if family(m) == "core"} for c in commands if (mods := _reached(graph, c)) is not None]
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
        mods = _reached(graph, st.command)
        if mods is None:
            out.append(StageDeps(st, [], [], [], f"no cli module defines `datakit {st.command}`"))
            continue
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


# Sections whose values never change a stage's results (where the stages run), so DVC need not
# re-run a stage when they change.
NEUTRAL_SECTIONS = frozenset({"compute"})


def sections_read(graph: Graph, command: str) -> set[str]:
    """The params.yaml sections `datakit <command>` reads. The composition root picks them (stages
    get their params handed in): the `section(params, "<name>")` calls in the command's function
    and in the cli helpers it runs (cli modules that define no command), and the sections read by
    functions of the modules it runs that those places call by name (`train_section(params)`).
    A module-level string constant as the name counts too."""
    root, body, _ = _command_node(graph, command)
    scopes: list[tuple[ast.AST, dict[str, str]]] = []
    by_function: dict[str, set[str]] = {}
    for mod in reached(graph, command):
        tree = ast.parse(graph.modules[mod].path.read_text(encoding="utf-8"))
        consts = _string_constants(tree)
        if mod == root:
            scopes.append((body, consts))
        elif family(mod) == ROOT:
            if not _defines_commands(graph, mod):
                scopes.append((tree, consts))
        else:
            for fn in ast.walk(tree):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and (read := _section_calls(fn, consts)):
                    by_function.setdefault(fn.name, set()).update(read)
    found: set[str] = set()
    for scope, consts in scopes:
        found |= _section_calls(scope, consts)
        for call in ast.walk(scope):
            if isinstance(call, ast.Call):
                name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
                found |= by_function.get(str(name), set())
    return found


def _string_constants(tree: ast.Module) -> dict[str, str]:
    consts: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            consts.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return consts


def _section_calls(node: ast.AST, consts: dict[str, str]) -> set[str]:
    found = set()
    for call in ast.walk(node):
        if not isinstance(call, ast.Call) or len(call.args) < 2:
            continue
        func = call.func
        if (isinstance(func, ast.Name) and func.id == "section") or (isinstance(func, ast.Attribute) and func.attr == "section"):
            arg = call.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in consts:
                found.add(consts[arg.id])
    return found


def declared_params(dvc_file: Path, stage: str) -> set[str]:
    """The top-level params.yaml keys a dvc.yaml stage lists under `params` (`train.lr` -> train;
    `{other.yaml: [a, b]}` entries count their keys)."""
    import yaml

    spec = ((yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages") or {}).get(stage) or {}
    found: set[str] = set()
    for entry in spec.get("params", []) or []:
        keys = [k for v in entry.values() for k in (v or [])] if isinstance(entry, dict) else [entry]
        found |= {str(k).split(".")[0] for k in keys}
    return found


def params_problems(graph: Graph, dvc_files: Iterable[Path]) -> list[str]:
    """Sections a stage's command reads that its `params` do not list (DVC would not re-run the
    stage when they change); NEUTRAL_SECTIONS aside."""
    bad = []
    for f in dvc_files:
        for st in dvc_stages(f, graph.src):
            if _reached(graph, st.command) is None:
                continue  # named by deps_problems
            missing = sorted(sections_read(graph, st.command) - declared_params(f, st.name) - NEUTRAL_SECTIONS)
            if missing:
                bad.append(f"{shown_path(f)}: stage {st.name}: `datakit {st.command}` reads params section(s) "
                           f"{', '.join(missing)}: list them in its params")
    return bad


def _reached(graph: Graph, command: str) -> set[str] | None:
    try:
        return reached(graph, command)
    except LookupError:
        return None


def _by_dep(graph: Graph, modules: Iterable[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for m in modules:
        grouped.setdefault(dep_path(graph, m), []).append(m)
    return grouped


def deps_problems(graph: Graph, dvc_files: Iterable[Path]) -> list[str]:
    bad = []
    for sd in stage_deps(graph, dvc_files):
        where = shown_path(sd.stage.file)
        if sd.error:
            bad.append(f"{where}: stage {sd.stage.name}: {sd.error}")
        for dep, mods in _by_dep(graph, sd.missing).items():
            bad.append(f"{where}: stage {sd.stage.name}: `datakit {sd.stage.command}` runs "
                       f"{', '.join(graph.relpath(m) for m in mods)}: list ${{src}}/{dep} in its deps")
        for s in sd.stale:
            bad.append(f"{where}: stage {sd.stage.name}: dep ${{src}}/{s}")
    return bad


def shown_path(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def default_dvc_files(repo: Path = REPO) -> list[Path]:
    return [repo / f for f in DVC_FILES if (repo / f).exists()]


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
            print(f"\n{shown_path(current)}:")
        listed = "" if not (sd.missing or sd.stale) else "   # now lacks: " + ", ".join(
            _by_dep(graph, sd.missing)) + "".join(f"; stale: {s}" for s in sd.stale)
        deps = ", ".join(f'"${{src}}/{d}"' for d in sd.needed)
        print(f"  {sd.stage.name} (datakit {sd.stage.command}): " + (sd.error or f"[{deps}]{listed}"))


def rewritten_deps(graph: Graph, dvc_file: Path) -> str:
    """The text of `dvc_file` with each datakit stage's `deps` set to what the rule asks: its
    other deps (data folders, reports, non-Python folders under src such as palettes/) as they
    are, then the modules it runs; and the sections it reads added to a one-line `params: [...]`.
    Comments and everything else stay; a stage's deps become one flow-style line."""
    text = dvc_file.read_text(encoding="utf-8")
    stages = {sd.stage.name: sd for sd in stage_deps(graph, [dvc_file])}
    variables = _vars(dvc_file)
    variable = next((k for k, v in variables.items() if str(v).rstrip("/").endswith(PACKAGE)), "src")
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    current = None
    i = 0
    while i < len(lines):
        line = lines[i]
        head = re.match(r"^  (\w[\w-]*):", line)
        if head:
            current = head.group(1)
        deps = re.match(r"^(\s+)deps:(.*)$", line)
        if deps and current in stages and not stages[current].error:
            sd = stages[current]
            i += 1
            if not deps.group(2).strip():  # block style: drop the `- x` lines that follow
                while i < len(lines) and re.match(rf"^{deps.group(1)}\s+- ", lines[i]):
                    i += 1
            kept = [d if p is None else f"${{{variable}}}/{p.relative_to(graph.src.resolve()).as_posix()}"
                    for d, p in zip(sd.stage.deps, _resolved(sd.stage), strict=True) if p is None or not _python(p)]
            wanted = kept + [f"${{{variable}}}/{d}" for d in sd.needed]
            shown = ", ".join(f'"{d}"' if "$" in d or ":" in d else d for d in wanted)
            out.append(f"{deps.group(1)}deps: [{shown}]\n")
            continue
        params = re.match(r"^(\s+)params: \[(.*)\](\s*#.*)?$", line.rstrip("\n"))
        if params and current in stages and not stages[current].error:
            lacking = sorted(sections_read(graph, stages[current].stage.command)
                             - declared_params(dvc_file, current) - NEUTRAL_SECTIONS)
            if lacking:
                listed = [p.strip() for p in params.group(2).split(",") if p.strip()]
                line = f"{params.group(1)}params: [{', '.join(listed + lacking)}]{params.group(3) or ''}\n"
        out.append(line)
        i += 1
    return "".join(out)


def _vars(dvc_file: Path) -> dict[str, Any]:
    import yaml

    found: dict[str, Any] = {}
    for entry in (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("vars", []) or []:
        if isinstance(entry, dict):
            found.update(entry)
    return found


def _resolved(stage: DvcStage) -> list[Path | None]:
    """Each dep of `stage` resolved when it lies under src (None otherwise)."""
    src = {p for p in stage.src_deps}
    out: list[Path | None] = []
    for dep in stage.deps:
        path = Path(os.path.normpath(stage.file.parent.resolve() / dep))
        out.append(path if path in src else None)
    return out


def _python(path: Path) -> bool:
    """A dep that names Python code (a module, a package, or a path that no longer exists)."""
    return path.suffix == ".py" or not path.exists() or (path.is_dir() and any(path.rglob("*.py")))
