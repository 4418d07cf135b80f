"""The stage contract's structural rules, checked on the source (`datakit.archcheck`, no module is
imported): families, private names, module size and the DVC deps of every stage.

The deps rule (d): a stage's `deps` under `${src}` (dvc.yaml) or `../../src/datakit`
(pipelines/demo/dvc.yaml) must cover every datakit module its command can run: the closure of
the imports of the cli module defining the command (imports inside functions count, imports
under `if TYPE_CHECKING:` do not; a module's parent packages count, their `__init__` runs
first; another command's cli module contributes only its module-level imports). Exempt are the
cli modules (thin by contract: decisions live in the stage and its params) and the core modules
that every stage's command runs (the platform they all share; listing them everywhere would only
make every edit re-run every stage). A module inside a package is covered by listing the
package's folder (`${src}/dedup`), a plain module by its file. Every listed dep under src must
exist and cover at least one module the command runs (non-Python folders such as palettes/ are
data, left alone). `python -m datakit.archcheck --deps` (`make deps`) prints what each stage
should list.

The params rule (e): a stage's `params` list every params.yaml section its command reads: the
`section(params, "<name>")` calls in the command's function and the cli helpers it runs, and in
the functions of other modules it calls by name (`train_section(params)`); `compute` aside (where
stages run never changes what they write). `--write-deps` adds what is missing.

Each rule's assertion message lists every offending import, file or stage, one per line.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from datakit import archcheck

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "datakit"
DVC_FILES = [REPO / "dvc.yaml", REPO / "pipelines" / "demo" / "dvc.yaml"]


@pytest.fixture(scope="module")
def graph() -> archcheck.Graph:
    return archcheck.build(SRC)


def _none(problems: list[str], hint: str = "") -> None:
    """Fail listing every violation, one per line (no list repr)."""
    if problems:
        pytest.fail(f"{len(problems)} violation(s):\n" + "\n".join(problems) + hint, pytrace=False)


# ------------------------------------------------------------------------ the project's own tree


def test_a_no_imports_across_families(graph) -> None:
    """(a) a stage imports only core and its own family (lazy imports included); core imports no
    stage; only the composition root (cli/, __main__) imports cli."""
    problems = archcheck.cross_family_imports(graph)
    _none(problems)


def test_b_no_private_names_across_modules(graph) -> None:
    """(b) no `from x import _y` (or `x._y`) between modules; dunders such as __version__ are public."""
    problems = archcheck.private_imports(graph)
    _none(problems)


def test_c_no_module_over_600_lines(graph) -> None:
    """(c) no module over 600 lines but dedup/index.py and scrape/synthetic_render.py."""
    problems = archcheck.long_modules(graph)
    _none(problems)


def test_no_import_cycles(graph) -> None:
    """Module-level imports form no cycle (beyond a package re-exporting its own submodules)."""
    problems = archcheck.import_cycles(graph)
    _none(problems)


def test_d_dvc_deps_cover_what_each_stage_runs(graph) -> None:
    """(d) see the module docstring for the rule."""
    problems = archcheck.deps_problems(graph, DVC_FILES)
    _none(problems, "\n(python -m datakit.archcheck --deps prints what to list)")


def test_e_dvc_params_list_every_section_each_stage_reads(graph) -> None:
    """(e) a stage's `params` list every params.yaml section its command reads (`compute` aside:
    where stages run never changes what they write), so DVC re-runs it when one changes."""
    _none(archcheck.params_problems(graph, DVC_FILES))


def test_every_dvc_stage_is_a_datakit_command_the_checker_finds(graph) -> None:
    stages = [s for f in DVC_FILES for s in archcheck.dvc_stages(f, SRC)]
    assert {s.name for s in stages} >= {"scrape", "embed", "dedup", "split", "audit", "augment", "balance", "train",
                                        "evaluate", "report"}
    for st in stages:
        mods = archcheck.reached(graph, st.command)
        assert any(archcheck.family(m) not in ("core", archcheck.ROOT) for m in mods), (st.name, sorted(mods))


def test_every_module_has_a_family_from_the_architecture(graph) -> None:
    """The named families exist; a module not named is a stage of its own (never core by accident)."""
    fams = {archcheck.family(m) for m in graph.modules}
    assert {"core", "cli", "near-duplicates", "learning", "acquisition", "split", "augment", "embed", "colors",
            "export", "report", "verify", "balance"} <= fams
    assert archcheck.family("datakit.something_new") == "something_new"
    assert archcheck.family("datakit.audit.leaks") == archcheck.family("datakit.dedup.index") == "near-duplicates"
    assert archcheck.family("datakit.train.evaluate") == "learning"


# ------------------------------------------------------------- the checker catches what it should


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "src" / "datakit"
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return src


FAKE = {
    "__init__.py": "",
    "stage.py": "def kept(df):\n    return df\n",
    "manifest.py": "",
    "augment.py": "def apply():\n    pass\n\ndef _secret():\n    pass\n",
    "balance/__init__.py": "from datakit.balance.core import run\n",
    "balance/core.py": """\
        from datakit.stage import kept

        def run():
            from datakit.augment import apply  # a lazy stage -> stage import
            return apply
        """,
    "split.py": """\
        from typing import TYPE_CHECKING
        from datakit import augment
        from datakit.stage import kept

        if TYPE_CHECKING:
            from datakit.balance import run

        def run_split():
            return augment._secret()
        """,
    "dedup/__init__.py": "",
    "dedup/hashing.py": "def _init_worker():\n    pass\n",
    "audit.py": "from datakit.dedup.hashing import _init_worker\nfrom datakit.dedup import hashing\n",
    "params.py": "def check():\n    from datakit.split import run_split\n",
    "cli/__init__.py": "from datakit.cli import balance, split\n",
    "cli/app.py": "app = None\n",
    "cli/balance.py": """\
        from datakit.cli.app import app

        @app.command("balance")
        def balance():
            from datakit.balance import run
        """,
    "cli/split.py": """\
        from datakit.cli.app import app

        @app.command()
        def split():
            from datakit.split import run_split
        """,
    "big.py": "x = 1\n" * 601,
}


def test_checker_names_cross_family_private_and_long(tmp_path) -> None:
    g = archcheck.build(_tree(tmp_path, FAKE))
    cross = archcheck.cross_family_imports(g)
    assert any("datakit/balance/core.py:4: stage -> stage (lazy)" in c and "datakit.augment (apply)" in c for c in cross)
    assert any("datakit/split.py:2: stage -> stage" in c and "imports datakit.augment [augment]" in c for c in cross)
    assert any("(type-only)" in c and "datakit.balance" in c for c in cross)
    assert any("datakit/params.py:2: core -> stage (lazy)" in c for c in cross)
    assert not any("datakit/audit.py" in c for c in cross)  # dedup + audit is one family
    assert not any(c.startswith("datakit/cli/") for c in cross)  # the composition root imports anything
    private = archcheck.private_imports(g)
    assert any("datakit/audit.py:1:" in p and "datakit.dedup.hashing._init_worker" in p for p in private)
    assert any("datakit/split.py:9:" in p and "uses private datakit.augment._secret" in p for p in private)
    assert len(private) == 2
    assert archcheck.long_modules(g) == ["datakit/big.py: 601 lines (limit 600)"]
    assert archcheck.long_modules(g, allowed={"datakit.big"}) == []


def test_checker_deps_rule(tmp_path) -> None:
    src = _tree(tmp_path, FAKE)
    g = archcheck.build(src)
    assert archcheck.reached(g, "balance") >= {"datakit.balance", "datakit.balance.core", "datakit.augment",
                                               "datakit.stage"}
    assert "datakit.split" not in archcheck.reached(g, "balance")  # the other command's body does not run
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(textwrap.dedent("""\
        vars:
          - src: src/datakit
        stages:
          balance:
            cmd: datakit balance data/split --out data/balance
            deps: [data/split, "${src}/balance"]
          split:
            cmd: datakit split data/dedup --params params.yaml --out data/split
            deps: [data/dedup, "${src}/split.py", "${src}/augment.py", "${src}/dedup", "${src}/gone.py"]
        """))
    problems = archcheck.deps_problems(g, [dvc])
    assert any("stage balance" in p and "list ${src}/augment.py" in p for p in problems), problems
    assert any("stage split" in p and "${src}/dedup (the command runs none of it)" in p for p in problems), problems
    assert any("stage split" in p and "${src}/gone.py (does not exist)" in p for p in problems), problems
    assert len(problems) == 3, problems
    # stage is core and reached by every stage: exempt; augment is reached by one: listed.
    needed = {sd.stage.name: sd.needed for sd in archcheck.stage_deps(g, [dvc])}
    assert needed == {"balance": ["augment.py", "balance"], "split": ["augment.py", "split.py"]}


def test_write_deps_sets_what_the_rule_asks_and_keeps_the_rest(tmp_path) -> None:
    src = _tree(tmp_path, {**FAKE, "palettes/basic.csv": "name,r,g,b\n"})
    g = archcheck.build(src)
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text(textwrap.dedent("""\
        # a comment that stays
        vars:
          - src: src/datakit
        stages:
          balance:  # and this one
            cmd: datakit balance data/split --out data/balance
            deps:
              - data/split
              - ${src}/balance
              - ${src}/palettes
            outs: [data/balance]
          split:
            cmd: datakit split data/dedup --params params.yaml --out data/split
            deps: [data/dedup, "${src}/split.py", "${src}/dedup", "${src}/gone.py"]
        """))
    assert archcheck.deps_problems(g, [dvc])
    dvc.write_text(archcheck.rewritten_deps(g, dvc))
    text = dvc.read_text()
    assert "# a comment that stays" in text and "balance:  # and this one" in text and "outs: [data/balance]" in text
    assert 'deps: [data/split, "${src}/palettes", "${src}/augment.py", "${src}/balance"]' in text
    assert 'deps: [data/dedup, "${src}/augment.py", "${src}/split.py"]' in text
    assert archcheck.deps_problems(g, [dvc]) == []


def test_a_group_command_runs_its_default_subcommand_only(tmp_path) -> None:
    """`datakit dedup INPUT` is the group's `run`; `dedup calibrate`'s imports are not its deps."""
    src = _tree(tmp_path, {**FAKE, "cli/dedup.py": """\
        from datakit.cli.app import app

        @app.command("run")
        def dedup_run():
            from datakit.dedup import hashing

        @app.command("calibrate")
        def calibrate():
            from datakit.augment import apply
        """})
    mods = archcheck.reached(archcheck.build(src), "dedup")
    assert "datakit.dedup.hashing" in mods and "datakit.augment" not in mods


def test_a_stage_whose_command_is_not_found_is_named(tmp_path) -> None:
    g = archcheck.build(_tree(tmp_path, FAKE))
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text('stages:\n  x:\n    cmd: datakit nosuch data/a --out data/b\n    deps: [data/a]\n')
    assert archcheck.deps_problems(g, [dvc]) == [f"{dvc}: stage x: no cli module defines `datakit nosuch`"]
    assert archcheck.rewritten_deps(g, dvc) == dvc.read_text()


def test_sections_read_by_a_command_and_the_params_rule(tmp_path) -> None:
    src = _tree(tmp_path, {**FAKE,
                           "augment.py": 'KEY = "augment"\n\ndef variant_maker(params):\n    return section(params, KEY)\n'
                                         '\ndef apply():\n    pass\n',
                           "cli/balance.py": """\
        from datakit.cli.app import app

        @app.command("balance")
        def balance(params):
            from datakit.augment import variant_maker
            from datakit.balance import run
            p = section(params, "balance")
            make = variant_maker(params)
            section(params, "compute")
        """})
    g = archcheck.build(src)
    assert archcheck.sections_read(g, "balance") == {"balance", "augment", "compute"}
    assert archcheck.sections_read(g, "split") == set()
    dvc = tmp_path / "dvc.yaml"
    dvc.write_text('stages:\n  balance:\n    cmd: datakit balance data/split --out data/balance\n'
                   '    deps: [data/split]\n    params: [balance]  # why\n')
    assert archcheck.params_problems(g, [dvc]) == [
        f"{dvc}: stage balance: `datakit balance` reads params section(s) augment: list them in its params"]
    dvc.write_text(archcheck.rewritten_deps(g, dvc))
    assert "    params: [balance, augment]  # why\n" in dvc.read_text()
    assert archcheck.params_problems(g, [dvc]) == []
