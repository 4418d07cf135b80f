"""Beyond one process: `torchrun --nproc_per_node=2 -m datakit train` (DDP, gloo on the CPU) and
`datakit dedup` pointed at a Dask LocalCluster through DATAKIT_DASK_SCHEDULER."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.e2e.helpers import invoke, run_subprocess, write_params
from tests.unit.test_train import make_project

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TORCHRUN = Path(sys.executable).with_name("torchrun")
TRAIN = {"backbone": "resnet18", "pretrained": False, "image_size": 32, "epochs": 3, "batch_size": 8,
         "num_workers": 0, "device": "cpu", "dvclive": True, "patience": 0, "seed": 0}


def _torchrun(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not TORCHRUN.exists():
        pytest.skip("torchrun is not installed beside this Python (the train extra)")
    full = {**os.environ, "DVC_NO_ANALYTICS": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    full.pop("RANK", None)
    full.pop("WORLD_SIZE", None)
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "datakit", "train", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=200, env=full)


def _params(folder: Path, **train: object) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {**TRAIN, **train}, "augment": {"preset": "fashion"}}))
    return path


def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    from datakit.train.predict import load_model, predict_folder

    balance = make_project(tmp_path, per=(10, 5, 5))
    _params(tmp_path)
    res = _torchrun(tmp_path, "balance", "--out", "model", "--params", "params.yaml", "--report", "reports/train.json")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("best epoch") == 1  # only rank 0 prints the summary

    rep = json.loads((tmp_path / "reports" / "train.json").read_text())
    assert rep["world_size"] == 2 and rep["device"] == "cpu"
    assert rep["n_train"] == 30 and rep["train_rows_per_rank"] == 15  # the sampler split the rows
    assert rep["epochs_run"] == 3 and rep["val_accuracy"] >= 0.6
    # rank 0 alone wrote: one model, one history, one dvclive folder, and nothing else
    files = sorted(str(p.relative_to(tmp_path / "model")) for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith(("dvclive/", ".datakit/"))] == ["history.csv", "model.pt"]
    assert len(pd.read_csv(tmp_path / "model" / "history.csv")) == 3
    assert json.loads((tmp_path / "model" / "dvclive" / "metrics.json").read_text())["step"] == 2
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["train.json", "train.run.json"]  # + its timings

    # the model loads and predicts sanely: every class, mostly right, on held-out images
    lm = load_model(tmp_path / "model")
    assert lm.labels == ["blue", "green", "red"]
    df = pd.read_parquet(balance / "manifest.parquet")
    folder = tmp_path / "new"
    folder.mkdir()
    for row in df[df["split"] == "test"].itertuples():
        shutil.copy(tmp_path / row.path, folder / f"{row.label}-{row.image_id[:8]}.png")
    got = predict_folder(lm, folder, k=1, device="cpu")
    assert len(got) == 15 and got["error"].isna().all()
    assert set(got["label"]) == set(lm.labels)
    assert (got["label"] == got["path"].str.split("-").str[0]).mean() >= 0.6


def test_ranks_with_uneven_steps_do_not_deadlock(tmp_path: Path) -> None:
    """No pixel cache, and the two rows of rank 0's first batch unreadable: rank 0 skips that
    batch and takes one step fewer than rank 1 (DDP's Join keeps the gradient all-reduces paired)."""
    import torch

    from datakit.stage import SPLIT, load_input
    from datakit.train.data import has_image, split_rows

    balance = make_project(tmp_path, per=(10, 5, 5))
    _params(tmp_path, cache=False, batch_size=2, epochs=1, dvclive=False, online_augment=False)
    df = load_input(balance, needs=(SPLIT,)).manifest
    train = split_rows(df, "train", originals_only=False)
    train = train[has_image(train)]
    g = torch.Generator()
    g.manual_seed(0 + 1)  # DistributedSampler: seed + epoch (epochs count from 1)
    order = torch.randperm(len(train), generator=g).tolist()
    for row in (order[0], order[2]):  # rank 0's first batch (rank r takes order[r::2])
        (tmp_path / train["path"].iat[row]).write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    res = _torchrun(tmp_path, "balance", "--out", "model", "--params", "params.yaml", "--report", "train.json",
                    env={"DATAKIT_DIST_TIMEOUT_S": "60"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rep = json.loads((tmp_path / "train.json").read_text())
    assert rep["world_size"] == 2 and rep["train_rows_per_rank"] == 14 - 2  # 7 steps of 2, one batch skipped


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dedup_cli_on_a_local_cluster_is_byte_identical(tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    params = write_params(tmp_path, provider="synthetic", items=["vest", "hoodie"], attributes=["striped", "dotted"],
                          per_query=12)
    data = yaml.safe_load(params.read_text())
    data["compute"] = {"block_rows": 16, "chunk_size": 4}  # small partitions: the cluster gets many tasks
    params.write_text(yaml.safe_dump(data))
    assert invoke("scrape", "--params", params, "--out", tmp_path / "scrape", "--report", tmp_path / "s.json").exit_code == 0
    outs = {}
    for name, scheduler in [("local", "pool"), ("dask", "local:2")]:
        res = run_subprocess("dedup", tmp_path / "scrape", "--out", tmp_path / name, "--params", params,
                             "--report", tmp_path / f"{name}.json", env={"DATAKIT_DASK_SCHEDULER": scheduler})
        assert res.returncode == 0, res.stdout + res.stderr
        outs[name] = _sha(tmp_path / name / "manifest.parquet")
    assert outs["local"] == outs["dask"]
    rep = json.loads((tmp_path / "dask.json").read_text())
    assert rep["images"] >= 30 and rep["pairs"] > 0
