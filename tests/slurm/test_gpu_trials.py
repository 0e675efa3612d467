"""Trials of several GPUs on the real test cluster: one trial asks for both fake h100 GPUs of the
node, its training step runs as two ranks (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
each rank takes its own GPU of the two Slurm allocated, the ranks meet (gloo all_reduce on the
CPU), and rank 0 alone writes the artifacts the evaluator scores. And a trial that spans the two nodes
of the partition `pair`, one rank on each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import submitit

from autosci_hpc.config import load_config
from autosci_hpc.execution.sandbox import probe
from autosci_hpc.execution.slurm import SlurmTrialExecutor
from autosci_hpc.execution.trial import run_smoke

from helpers import drain, ranks_trials, submit

pytestmark = pytest.mark.slurm


def pair_partition(cluster: object) -> str:
    """The test cluster's partition of two nodes; the test skips, saying why, where there is none."""
    pair = str(getattr(cluster, "pair_partition"))
    if not pair:
        pytest.skip("the test cluster runs one node (tests/slurm/cluster.sh with AUTOSCI_SLURM_NODES=1): "
                    "no partition of two nodes")
    return pair


def two_node_executor(tmp_path: Path, cluster: object, time_min: int, time_limit_s: float) -> SlurmTrialExecutor:
    """The SLURM executor of trials of two GPUs on two nodes of the pair partition (one task per node)."""
    cfg = load_config(None, [f"executor.slurm.partition={pair_partition(cluster)}",
                             f"executor.slurm.time_min={time_min}"]).executor.slurm
    return SlurmTrialExecutor.from_config(tmp_path / "jobs", cfg, job_name="autosci-nodes",
                                          time_limit_s=time_limit_s, gpus_per_trial=2, nodes=2)


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


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_trial_on_two_nodes_runs_one_rank_on_each_and_they_meet(tmp_path: Path, slurm_cluster: object,
                                                                  sandbox: str) -> None:
    """`nodes: 2`, `gpus: 2` on the two-node partition: one task per node, one GPU each; the first node
    runs the trial, the second only its rank of the training step; they meet at the first node's host."""
    pytest.importorskip("torch")
    pair = pair_partition(slurm_cluster)
    if sandbox == "bwrap" and not probe("bwrap")[0]:
        pytest.skip(f"bubblewrap does not work here: {probe('bwrap')[1]}")
    cfg = load_config(None, [f"executor.slurm.partition={pair}", "executor.slurm.time_min=5",
                             "executor.slurm.cpus_per_task=1"]).executor.slurm
    executor = SlurmTrialExecutor.from_config(tmp_path / "jobs", cfg, job_name="autosci-nodes",
                                              time_limit_s=120, gpus_per_trial=2, nodes=2)
    store, requests = ranks_trials(tmp_path, 1, sandbox)
    (job_id,) = submit(store, executor, requests)
    trial = drain(store, executor)[requests[0].trial_id]
    assert trial.status == "succeeded", trial.failure_reason + "\n" + trial.log_tail
    seen = json.loads((Path(requests[0].folder) / "artifacts" / "seen.json").read_text())
    ranks = sorted(seen["ranks"], key=lambda r: r["rank"])
    # One rank on each node: global ranks 0 and 1 of 2, each the first (and only) local rank of its node.
    assert [(r["rank"], r["node_rank"], r["local_rank"]) for r in ranks] == [(0, 0, 0), (1, 1, 0)]
    assert all(r["world_size"] == 2 and r["local_world_size"] == 1 for r in ranks)
    # Each saw its own node's one GPU (Slurm gave each node gpu:1: index 0 of that node's).
    assert [(r["visible"], r["device"]) for r in ranks] == [("0", "0"), ("0", "0")]
    # They met at one address (the first node's host, not the loopback of one sandbox): sum 1 + 2.
    assert seen["sum"] == 3 and trial.metric == 3.0 and seen["writer"] == 0
    assert len({r["master"] for r in ranks}) == 1 and not ranks[0]["master"].startswith("127.0.0.1:")
    # The two ranks ran on two different Slurm nodes: the job's two tasks say where each ran, and so do
    # the ranks themselves where no sandbox hides the scheduler's variables.
    tasks = submitit.SlurmJob(folder=tmp_path / "jobs" / "%j", job_id=job_id, tasks=(0, 1)).results()
    assert tasks[0] == {"trial_id": trial.id, "metric": 3.0, "slurm_node": tasks[0]["slurm_node"]}
    assert tasks[1] == {"trial_id": trial.id, "node": 1, "returncode": 0,
                        "slurm_node": tasks[1]["slurm_node"]}
    assert len({tasks[0]["slurm_node"], tasks[1]["slurm_node"]}) == 2
    if sandbox == "none":
        assert [r["slurm_node"] for r in ranks] == [tasks[0]["slurm_node"], tasks[1]["slurm_node"]]
    # One result (the first node's); the second node wrote only its log.
    folder = Path(requests[0].folder)
    assert sorted(p.name for p in folder.glob("result*.json")) == ["result.json"]
    assert not list(folder.glob("node-*.failed")) and (folder / "node-1.log").is_file()
    assert trial.conditions == {**trial.conditions, "executor": "slurm", "gpus": 2.0, "ranks": 2, "nodes": 2}
    submission = next((tmp_path / "jobs").rglob("*_submission.sh")).read_text()
    assert "--nodes=2" in submission and "--ntasks-per-node=1" in submission
    assert "--gres=gpu:1" in submission and f"--partition={pair}" in submission


def test_a_smoke_run_on_two_nodes_runs_like_a_trial_and_answers_from_the_first(tmp_path: Path,
                                                                               slurm_cluster: object) -> None:
    """An experimenter's smoke run of a task on two nodes goes through the same job shape: both nodes run
    their rank, the first answers (submitit's `result` would refuse a job of two tasks)."""
    pytest.importorskip("torch")
    executor = two_node_executor(tmp_path, slurm_cluster, 5, 120)
    _, requests = ranks_trials(tmp_path, 1, "bwrap" if probe("bwrap")[0] else "none")
    answer = executor.run_short(run_smoke, requests[0], 240)
    assert answer["ok"] is True, answer
    seen = json.loads((Path(requests[0].folder) / "artifacts" / "seen.json").read_text())
    assert seen["sum"] == 3 and sorted(r["node_rank"] for r in seen["ranks"]) == [0, 1]
    assert (Path(requests[0].folder) / "smoke.done").is_file() and not list(Path(requests[0].folder).glob(
        "node-*.failed"))


def test_a_trial_whose_second_node_fails_fails_at_once_with_that_nodes_reason(tmp_path: Path,
                                                                              slurm_cluster: object) -> None:
    """The rank on the second node exits before the ranks meet: the first node's rank would wait for it
    until the time limit; the second node's failure note stops it, and the trial fails saying why."""
    pytest.importorskip("torch")
    executor = two_node_executor(tmp_path, slurm_cluster, 10, 600)
    store, requests = ranks_trials(tmp_path, 1, "bwrap" if probe("bwrap")[0] else "none")
    requests = [requests[0].model_copy(update={"overrides": {"sleep": 0.0, "fail_rank": 1}})]
    submit(store, executor, requests)
    trial = drain(store, executor, timeout=300)[requests[0].trial_id]
    assert trial.status == "failed" and trial.failure_class == "program_error"
    why = "node 1 of the trial: its ranks exited with status 3: rank 1 fails on purpose"
    assert trial.failure_reason.startswith(why), trial.failure_reason
    folder = Path(requests[0].folder)
    assert "rank 1 fails on purpose" in (folder / "node-1.log").read_text()
    assert not (folder / "artifacts" / "seen.json").exists()
