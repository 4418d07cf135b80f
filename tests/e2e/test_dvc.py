"""The demo pipeline under real DVC: `dvc repro`, experiments through DVC's queue, push/pull.

One small project is built per module (two classes, 12 images a query, 32 px, one epoch) from
`pipelines/demo/dvc.yaml` and `pipelines/demo/params.yaml`, with a snapshot of `src/datakit`
inside it so the code dependencies are the project's own files (edits to the checkout while the
module runs do not invalidate the lock). Every DVC and git call is a subprocess with an isolated
environment: no analytics, no Studio, no user or system DVC/git configuration, and the only
network peer is a moto S3 server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.helpers import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

DEMO = REPO / "pipelines" / "demo"
BIN = Path(sys.executable).parent
STAGES = ["scrape", "embed", "dedup", "suspects", "curate", "split", "credits", "audit", "augment", "embed_augment", "balance",
          "train", "evaluate", "report"]
DATA_STAGES = STAGES[:STAGES.index("train")]  # what a train.lr change must not re-run
AFTER_AUDIT = STAGES[STAGES.index("augment"):]  # what a failed audit must stop
BUCKET = "datakit-e2e"
UP_TO_DATE = "Data and pipelines are up to date."

# The demo's params, shrunk: every class still lands in every split.
TINY: dict[str, dict[str, Any]] = {
    "scrape": {"items": ["vest", "hoodie"], "attributes": ["striped", "dotted"], "per_query": 12, "min_per_label": 1},
    "dedup": {"workers": 1},
    "split": {"ratios": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "augment": {"variants": 1},
    "embed": {"image_size": 32, "batch_size": 32, "workers": 0},
    "train": {"image_size": 32, "epochs": 1, "batch_size": 16, "num_workers": 0, "lr": 0.003},
    "evaluate": {"learning_curve": [0.5, 1.0], "num_workers": 0},
}


# --- subprocess plumbing ---------------------------------------------------------------------------

def make_env(home: Path) -> dict[str, str]:
    """The environment of every git/dvc/datakit subprocess: the venv first on PATH, DVC and git
    cut off from user and system configuration, fake AWS credentials, nothing that phones home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_", "GIT_"))}
    gitconfig = home / "gitconfig"
    if not gitconfig.exists():
        gitconfig.write_text("[user]\n\tname = datakit e2e\n\temail = e2e@datakit.invalid\n"
                             "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    for sub in ("dvc-global", "dvc-system", "dvc-site"):
        (home / sub).mkdir(exist_ok=True)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "DVC_IGNORE_ISATTY": "1",
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - moto's fake credentials
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    return env


class Project:
    """A git + DVC project folder and the environment its commands run in."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.repro_out = ""  # the first `dvc repro`'s stdout
        self.repro_s = 0.0  # and its wall time

    def run(self, *args: str | Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(a) for a in args], cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    def dvc(self, *args: str | Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.run(sys.executable, "-m", "dvc", *args, check=check, timeout=timeout)

    def git(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("git", *args, check=check, timeout=120)

    def lock(self) -> dict[str, Any]:
        return yaml.safe_load((self.root / "dvc.lock").read_text())

    def clone(self, dest: Path) -> Project:
        self.run("git", "clone", "-q", self.root, dest, timeout=120)
        return Project(dest, self.env)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """A stage folder's files, but not its `.datakit/` lock (.dvcignore: not data, not pushed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".datakit" not in p.relative_to(folder).parts}


def lock_outs(lock: dict[str, Any]) -> list[str]:
    return [o["path"] for st in lock["stages"].values() for o in st.get("outs", [])]


# --- fixtures ----------------------------------------------------------------------------------------

def write_pipeline(root: Path) -> None:
    """The demo's dvc.yaml with `src` pointing at the snapshot, and the demo's params shrunk."""
    spec = yaml.safe_load((DEMO / "dvc.yaml").read_text())
    assert list(spec["stages"]) == STAGES, "the demo pipeline's stages changed: update this test"
    spec["vars"] = [{"src": "src/datakit"}]
    (root / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    params = yaml.safe_load((DEMO / "params.yaml").read_text())
    for section, values in TINY.items():
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    base = tmp_path_factory.mktemp("dvc")
    home = base / "home"
    home.mkdir()
    root = base / "project"
    root.mkdir()
    p = Project(root, make_env(home))
    shutil.copytree(REPO / "src" / "datakit", root / "src" / "datakit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write_pipeline(root)
    shutil.copytree(DEMO / "review", root / "review")  # the (empty) decisions file curate depends on
    # the trainer's pixel cache at the project root; run facts (timings); rendered plots
    (root / ".gitignore").write_text(".datakit/\n*.run.json\ndvc_plots/\n")
    (root / ".dvcignore").write_text(".datakit/\n")  # each stage folder's lock file is not data (as datakit init writes)
    p.git("init", "-q")
    p.dvc("init", "-q")
    p.run(BIN / "datakit", "init", ".", "--plots-only")  # the epochs template and the offline page
    p.git("add", "-A")
    p.git("commit", "-q", "-m", "tiny demo pipeline")

    t0 = time.monotonic()
    p.repro_out = p.dvc("repro").stdout
    p.repro_s = time.monotonic() - t0
    print(f"\nfirst dvc repro: {p.repro_s:.1f} s")

    # the baseline every experiment and clone starts from: lock, metrics, report, ignores
    p.git("add", "-A")
    p.git("commit", "-q", "-m", "baseline: dvc.lock and metrics")
    assert p.git("status", "--porcelain").stdout.strip() == ""
    yield p
    # a worker left behind by a failed queue test must not outlive the module
    if (root / ".dvc" / "tmp" / "exps").exists():
        p.dvc("queue", "stop", "--kill", check=False, timeout=60)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a loopback port, with one empty bucket."""
    import boto3

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"moto_server exited: {log.read_text()[-2000:]}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"moto_server did not listen on {port}: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                           aws_secret_access_key="testing", region_name="us-east-1")  # noqa: S106
        s3.create_bucket(Bucket=BUCKET)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# --- 1. dvc repro --------------------------------------------------------------------------------------

def test_repro_runs_every_stage_and_locks_it(project: Project) -> None:
    out = project.repro_out
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out, f"stage {stage} did not run"
    lock = project.lock()
    assert list(lock["stages"]) == STAGES
    for name, st in lock["stages"].items():
        assert st["cmd"].startswith("datakit "), name
        assert all("md5" in d for d in st.get("deps", [])), f"{name}: a dependency without a hash"
        assert all("md5" in o for o in st.get("outs", [])), f"{name}: an output without a hash"
    # every stage depends on its own code inside the project, not on the checkout
    assert {d["path"] for d in lock["stages"]["split"]["deps"]} == {"data/curate", "src/datakit/graph.py", "src/datakit/split.py"}
    assert lock["stages"]["train"]["params"]["params.yaml"]["train"]["lr"] == 0.003

    report = project.root / "reports" / "report.html"
    assert report.is_file() and report.stat().st_size > 2000
    assert "<html" in report.read_text(encoding="utf-8").lower()
    ev = json.loads((project.root / "reports" / "evaluate.json").read_text())
    assert 0.0 <= ev["accuracy"] <= 1.0
    assert 0.0 <= ev["balanced_accuracy"] <= 1.0
    assert ev["n_test"] > 0
    audit = json.loads((project.root / "reports" / "audit.json").read_text())
    assert audit["ok"] is True and audit["leaks"] == 0
    for folder in ("split", "balance", "train", "evaluate"):
        assert (project.root / "data" / folder).is_dir(), folder


def test_second_repro_is_a_fast_no_op(project: Project) -> None:
    before = (project.root / "dvc.lock").read_bytes()
    t0 = time.monotonic()
    proc = project.dvc("repro")
    took = time.monotonic() - t0
    print(f"\nno-op dvc repro: {took:.2f} s (first run {project.repro_s:.1f} s)")
    assert UP_TO_DATE in proc.stdout
    assert "Running stage" not in proc.stdout
    assert (project.root / "dvc.lock").read_bytes() == before
    assert took < 10, f"a no-op dvc repro took {took:.1f} s"


def test_a_fresh_clone_reproduces_the_committed_lock(project: Project, tmp_path: Path) -> None:
    """Every declared output is deterministic: a clone with no cache re-runs every stage and
    leaves dvc.lock and git as committed (timings go to reports/*.run.json, not versioned)."""
    clone = project.clone(tmp_path / "fresh")
    proc = clone.dvc("repro")
    lock = project.lock()["stages"]
    for stage in STAGES:  # every stage with a cached output re-ran (a clone has no DVC cache) ...
        cached = any(o["path"].startswith("data/") for o in lock[stage].get("outs", []))
        ran = f"Running stage '{stage}'" in proc.stdout
        assert ran or not cached, f"stage {stage} did not run in the fresh clone"
        # ... and one whose outputs are all in git (audit, report) may be skipped as unchanged
        assert ran or f"Stage '{stage}' didn't change, skipping" in proc.stdout, stage
    changed = clone.git("status", "--porcelain").stdout.strip()
    assert changed == "", f"a re-run changed versioned files:\n{changed}\n{clone.git('diff', '--stat').stdout}"
    assert (clone.root / "dvc.lock").read_bytes() == (project.root / "dvc.lock").read_bytes()
    assert (clone.root / "reports" / "train.run.json").is_file()  # the timings are still written


def test_metrics_are_a_few_named_scalars(project: Project) -> None:
    shown = json.loads(project.dvc("metrics", "show", "--json").stdout)
    (files,) = [rev["data"] for rev in shown.values()]
    assert set(files) == {"reports/metrics.json"}
    data = files["reports/metrics.json"]["data"]
    assert {"accuracy", "balanced_accuracy", "macro_f1", "n_test", "leaks", "duplicates"} <= set(data)
    assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()), data
    ev = json.loads((project.root / "reports" / "evaluate.json").read_text())
    assert data["accuracy"] == pytest.approx(ev["accuracy"], abs=1e-4)
    table = project.dvc("metrics", "show").stdout
    assert max(map(len, table.splitlines())) < 200, table  # one screen, not ~380 columns
    # the committed row of `dvc exp show` reads the committed metrics.json: values, not "!"
    head = project.git("rev-parse", "HEAD").stdout.strip()
    rows = json.loads(project.dvc("exp", "show", "--json").stdout)
    main = next(r for r in rows if r["rev"] == head)["data"]
    assert main["metrics"]["reports/metrics.json"]["data"]["accuracy"] == data["accuracy"]


def test_plots_render_with_the_confusion_matrix(project: Project, tmp_path: Path) -> None:
    proc = project.dvc("plots", "show", "--json")
    plots = json.loads(proc.stdout)["data"]
    assert set(plots) == {"confusion", "per_class_recall", "per_class_precision", "loss", "accuracy", "learning_curve"}
    for name, renders in plots.items():
        assert renders and all("errors" not in r for r in renders), name
    (confusion,) = plots["confusion"]
    assert confusion["type"] == "vega"
    spec = json.dumps(confusion["content"])
    assert '"title": "actual"' in spec and '"title": "predicted"' in spec  # named axes (actual on rows)
    rows = confusion["content"]["data"]["values"]
    ev = json.loads((project.root / "reports" / "evaluate.json").read_text())
    assert len(rows) == ev["n_test"]
    assert {r["actual"] for r in rows} == {"vest", "hoodie"}
    assert {r["predicted"] for r in rows} <= {"vest", "hoodie"}
    accuracy = sum(r["actual"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(ev["accuracy"])
    # and the static HTML rendering
    project.dvc("plots", "show", "-o", tmp_path / "plots")
    assert (tmp_path / "plots" / "index.html").stat().st_size > 1000


# --- 2. experiments through DVC's queue ---------------------------------------------------------------

QUEUE_STATES = {"Queued", "Running", "Success", "Failed", "Killed", "Unknown"}


def _queue_rows(text: str) -> list[list[str]]:
    """`dvc queue status` rows as [task, name, ..., status]."""
    rows = [line.split() for line in text.splitlines()]
    return [r for r in rows if len(r) >= 3 and r[-1] in QUEUE_STATES]


def test_grid_through_the_dvc_queue(project: Project) -> None:
    head = project.git("rev-parse", "HEAD").stdout.strip()
    queued = project.dvc("exp", "run", "--queue", "-S", "train.lr=0.01,0.003")
    assert queued.stdout.count("Queued experiment") == 2, queued.stdout
    rows = _queue_rows(project.dvc("queue", "status").stdout)
    assert [r[-1] for r in rows] == ["Queued", "Queued"]
    names = [r[1] for r in rows]

    t0 = time.monotonic()
    project.dvc("queue", "start", "-j", "1")
    deadline = t0 + 420
    status = ""
    while time.monotonic() < deadline:
        time.sleep(3)
        proc = project.dvc("queue", "status", check=False)
        if proc.returncode != 0:
            continue  # the repo can be locked while a worker collects a result
        status = proc.stdout
        states = [r[-1] for r in _queue_rows(status)]
        if states and not {"Queued", "Running"} & set(states):
            break
        if set(states) == {"Queued"} and "0 active" in status and time.monotonic() - t0 > 120:
            raise AssertionError(f"no queue worker picked the experiments up:\n{status}")
    else:
        raise AssertionError(f"the queue did not drain in time:\n{status}")
    print(f"\nqueue of 2 experiments: {time.monotonic() - t0:.1f} s")
    assert [r[-1] for r in _queue_rows(status)] == ["Success", "Success"], status

    shown = json.loads(project.dvc("exp", "show", "--json").stdout)
    baseline = next(r for r in shown if r["rev"] == head)
    found: dict[float, dict[str, Any]] = {}
    for exp in baseline.get("experiments") or []:
        for rev in exp["revs"]:
            data = rev["data"]
            lr = data["params"]["params.yaml"]["data"]["train"]["lr"]
            metrics = data["metrics"]
            assert set(metrics) == {"reports/metrics.json"}  # one metrics file, flat scalars
            train = json.loads(project.git("show", f"{rev['rev']}:reports/train.json").stdout)
            found[lr] = {"name": rev["name"], "metrics": metrics["reports/metrics.json"]["data"], "train": train}
    assert set(found) == {0.01, 0.003}, found.keys()
    assert {found[0.01]["name"], found[0.003]["name"]} == set(names)
    for lr, m in found.items():
        assert 0.0 <= m["metrics"]["accuracy"] <= 1.0
        assert all(isinstance(v, int | float) for v in m["metrics"].values()), m["metrics"]
        assert m["train"]["params"]["lr"] == lr  # the model was trained with the queued value

    # a new lr re-runs train/evaluate/report only; the data stages come from the cache
    log = project.dvc("queue", "logs", found[0.01]["name"]).stdout
    for stage in DATA_STAGES:
        assert f"Running stage '{stage}'" not in log, f"{stage} re-ran for a train.lr change"
    for stage in STAGES[len(DATA_STAGES):]:
        assert f"Running stage '{stage}'" in log, log[-3000:]
    # the baseline's own lr re-runs nothing
    log = project.dvc("queue", "logs", found[0.003]["name"]).stdout
    assert "Running stage" not in log and "Stage 'train' didn't change" in log, log[-3000:]
    # the workspace and HEAD are untouched: experiments live in refs
    assert project.git("rev-parse", "HEAD").stdout.strip() == head
    assert project.git("status", "--porcelain").stdout.strip() == ""
    assert yaml.safe_load((project.root / "params.yaml").read_text())["train"]["lr"] == 0.003


# --- 3. sharing: push to a folder and to S3, pull into fresh clones -------------------------------------

def _check_clone(project: Project, clone: Project) -> None:
    outs = lock_outs(project.lock())
    assert {"data/split", "data/balance", "data/scrape"} <= set(outs)
    for out in outs:
        assert (clone.root / out).exists(), f"{out} was not pulled"
    for rel in ("data/split/manifest.parquet", "data/balance/manifest.parquet"):
        assert (clone.root / rel).read_bytes() == (project.root / rel).read_bytes(), rel
    for out in ("data/split", "data/balance", "data/train", "data/evaluate"):
        assert tree_bytes(clone.root / out) == tree_bytes(project.root / out), out
    verify = clone.run(BIN / "datakit", "verify", "data/scrape")
    assert verify.returncode == 0
    assert UP_TO_DATE in clone.dvc("status").stdout


@pytest.fixture(scope="module")
def local_remote(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder remote named `local`, committed to .dvc/config, with the baseline pushed."""
    store = tmp_path_factory.mktemp("remote") / "store"
    project.dvc("remote", "add", "local", store)
    project.git("add", ".dvc/config")
    project.git("commit", "-q", "-m", "local remote")
    push = project.dvc("push", "-r", "local")
    assert "pushed" in push.stdout, push.stdout
    return store


def test_push_pull_local_folder(project: Project, local_remote: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert sum(1 for p in local_remote.rglob("*") if p.is_file()) > 30
    assert "in sync" in project.dvc("status", "-c", "-r", "local").stdout

    clone = project.clone(tmp_path_factory.mktemp("clone-local") / "p")
    assert not (clone.root / "data" / "split").exists()
    clone.dvc("pull", "-r", "local")
    _check_clone(project, clone)


def test_push_pull_s3_on_loopback(project: Project, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    import boto3

    project.dvc("remote", "add", "s3", f"s3://{BUCKET}/store")
    project.dvc("remote", "modify", "s3", "endpointurl", s3_endpoint)
    config = (project.root / ".dvc" / "config").read_text()
    assert s3_endpoint in config and "testing" not in config  # credentials stay in the environment
    project.git("add", ".dvc/config")
    project.git("commit", "-q", "-m", "s3 remote")
    push = project.dvc("push", "-r", "s3")
    assert "pushed" in push.stdout

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")  # noqa: S106
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="store/")
            for o in page.get("Contents", [])]
    assert len(keys) > 30

    clone = project.clone(tmp_path_factory.mktemp("clone-s3") / "p")
    clone.dvc("pull", "-r", "s3")
    _check_clone(project, clone)


# --- the audit gate --------------------------------------------------------------------------------------

def test_audit_gate_stops_repro_on_leaks(project: Project, local_remote: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """Switch near-duplicate detection off (dhash at radius 0, no vectors): the synthetic
    provider's near-copies are then split apart, `datakit audit` (dhash and vectors, overlay
    check) exits 1 and `dvc repro` stops before augment."""
    clone = project.clone(tmp_path_factory.mktemp("clone-gate") / "p")
    clone.dvc("pull", "-r", "local")
    before = clone.lock()["stages"]

    params = yaml.safe_load((clone.root / "params.yaml").read_text())
    params["dedup"].update(threshold=0, crops=False, signals=["dhash"])
    (clone.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = clone.dvc("repro", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "Running stage 'audit'" in text and "failed to reproduce 'audit'" in text, text
    for stage in AFTER_AUDIT:
        assert f"Running stage '{stage}'" not in text, f"{stage} ran past a failed audit"

    audit = json.loads((clone.root / "reports" / "audit.json").read_text())
    assert audit["ok"] is False and audit["leaks"] > audit["max_leaks"] == 0
    after = clone.lock()["stages"]
    assert after["split"] != before["split"]  # the new split was locked...
    assert after["audit"] == before["audit"]  # ...the failed audit was not
    assert all(after[s] == before[s] for s in AFTER_AUDIT)
