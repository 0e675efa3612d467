"""Trials of several GPUs on the real test cluster: one trial asks for both fake h100 GPUs of the
node, its training step runs as two ranks (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
each rank takes its own GPU of the two Slurm allocated, the ranks meet (gloo all_reduce on the
CPU), and rank 0 alone writes the artifacts the evaluator scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autosci_hpc.config import load_config
from autosci_hpc.execution.sandbox import probe
from autosci_hpc.execution.slurm import SlurmTrialExecutor

from helpers import drain, ranks_trials, submit

pytestmark = pytest.mark.slurm


def test_a_trial_of_two_gpus_runs_two_ranks_on_the_gpu_partition(tmp_path: Path,
                                                                  slurm_cluster: object) -> None:
    pytest.importorskip("torch")
    cfg = load_config(None, [f"executor.slurm.partition={getattr(slurm_cluster, 'gpu_partition')}",
                             "executor.slurm.time_min=5", "executor.slurm.cpus_per_task=2"]).executor.slurm
    executor = SlurmTrialExecutor.from_config(tmp_path / "jobs", cfg, job_name="autosci-ranks",
                                              time_limit_s=120, gpus_per_trial=2)
    store, requests = ranks_trials(tmp_path, 1, "bwrap" if probe("bwrap")[0] else "none")
    submit(store, executor, requests)
    trial = drain(store, executor)[requests[0].trial_id]
    assert trial.status == "succeeded", trial.failure_reason + "\n" + trial.log_tail
    # Slurm allocated the node's two GPUs to the job, and each rank took its own.
    assert sorted(trial.conditions["slurm_gpus"].split(",")) == ["0", "1"]
    seen = json.loads((Path(requests[0].folder) / "artifacts" / "seen.json").read_text())
    ranks = sorted(seen["ranks"], key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["visible"] == ranks[1]["visible"] == trial.conditions["devices"]
    assert ranks[0]["device"] != ranks[1]["device"]
    # They met: the all_reduce of rank + 1 over both is 3, one rendezvous, rank 0 the only writer.
    assert seen["sum"] == 3 and trial.metric == 3.0 and seen["writer"] == 0
    assert len({r["master"] for r in ranks}) == 1
    assert trial.conditions == {**trial.conditions, "executor": "slurm", "gpus": 2.0, "ranks": 2, "share": 1}
    submission = next((tmp_path / "jobs").rglob("*_submission.sh")).read_text()
    assert "--gres=gpu:2" in submission and "--partition=h100" in submission
