"""autosci_hpc on the real test SLURM: campaigns through arrays, failure classes, re-attach."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from autosci_hpc.coordination.coordinator import Coordinator
from autosci_hpc.execution.results import RESULT_FILE
from autosci_hpc.execution.slurm import SlurmTrialExecutor
from autosci_hpc.execution.trial import TrialRequest, task_request
from autosci_hpc.state import Store
from autosci_hpc.state.models import Event, Trial
from autosci_hpc.task import load_task
from helpers import FIXTURE_TASKS, ROOT, campaign_config, drain, make_trials, submit


@pytest.fixture
def sbatch_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_cluster: object) -> Path:
    """Put a counting `sbatch` first on PATH: every real submission leaves one line."""
    real = shutil.which("sbatch")
    assert real is not None
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "sbatch.log"
    # `sbatch --test-only` (the launch check) submits nothing: not a submission.
    (bindir / "sbatch").write_text(f'#!/bin/sh\ncase "$*" in *--test-only*) ;; *) echo "$@" >> {log} ;; esac\n'
                                   f'exec {real} "$@"\n')
    (bindir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def sbatch_calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def slurm_overrides(cluster: object, *extra: str) -> list[str]:
    return ["executor.kind=slurm", f"executor.slurm.partition={getattr(cluster, 'partition')}",
            "executor.slurm.time_min=5", "executor.slurm.max_concurrent=8", "executor.result_grace_s=5", *extra]


def test_a_campaign_runs_through_real_arrays(tmp_path: Path, slurm_cluster: object, sbatch_log: Path) -> None:
    config = campaign_config(tmp_path, "toy", *slurm_overrides(slurm_cluster, "budget.trials=24",
                                                                "coordination.experimenters_per_team=2"))
    coordinator = Coordinator(config, config.campaign_folder())
    summary = coordinator.run()
    assert summary.status == "finished" and summary.trials >= 20
    with coordinator.store.read() as session:
        trials = session.exec(select(Trial)).all()
    assert all(t.executor == "slurm" and t.job_id for t in trials)
    arrays = {t.job_id.split("_")[0] for t in trials}
    assert sbatch_calls(sbatch_log) == coordinator.executor.submit_calls == len(arrays) < len(trials)
    assert any("_" in t.job_id for t in trials)  # several trials went out as one array
    assert all(t.environment.get("slurm_job_id") for t in trials if t.status == "succeeded")


def direct(tmp_path: Path, cluster: object, specs: list[dict], timeout_min: int = 5,
           time_limit_s: float = 60) -> tuple[Store, SlurmTrialExecutor, list[TrialRequest]]:
    store, requests = make_trials(tmp_path, specs, time_limit_s=time_limit_s)
    executor = SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": timeout_min,
                                                      "slurm_partition": getattr(cluster, "partition")},
                                  job_name="autosci-direct", min_poll_s=0.5, max_poll_s=3)
    submit(store, executor, requests)
    return store, executor, requests


def sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "State"], capture_output=True, text=True)
    return out.stdout.split()[0] if out.stdout.split() else ""


def test_a_failing_program_is_failed_in_slurm_too_with_its_log(tmp_path: Path, slurm_cluster: object) -> None:
    store, executor, requests = direct(tmp_path, slurm_cluster, [{"behaviour": "crash"}])
    trial = drain(store, executor)[requests[0].trial_id]
    assert trial.failure_class == "program_error" and "Traceback" in trial.log_tail
    if getattr(slurm_cluster, "accounting"):
        assert sacct_state(trial.job_id) == "FAILED"  # the job's exit status tells the truth too


def test_glued_or_truncated_result_files_fail_after_the_grace_window(tmp_path: Path, slurm_cluster: object) -> None:
    store, executor, requests = direct(tmp_path, slurm_cluster, [{"x": 0.1}, {"x": 0.2}])
    for request in requests:  # let both jobs finish, then damage their result files as a bad NFS would
        path = Path(request.folder) / RESULT_FILE
        deadline = time.monotonic() + 120
        while not path.exists():
            assert time.monotonic() < deadline
            time.sleep(0.3)
    first, second = (Path(r.folder) / RESULT_FILE for r in requests)
    text = first.read_text()
    first.write_text(text + text)  # two records glued together
    second.write_text(second.read_text()[:40])  # truncated
    start = time.monotonic()
    trials = drain(store, executor, grace_s=3)
    assert time.monotonic() - start >= 3
    for request in requests:
        trial = trials[request.trial_id]
        assert trial.status == "failed" and "invalid result file" in trial.failure_reason


def test_a_coordinator_rebuilt_mid_campaign_reattaches(tmp_path: Path, slurm_cluster: object,
                                                        sbatch_log: Path) -> None:
    task_dir = tmp_path / "slow_toy"
    shutil.copytree(FIXTURE_TASKS / "toy", task_dir)
    config_file = task_dir / "program" / "config.yaml"
    config_file.write_text(config_file.read_text().replace("sleep: 0.0", "sleep: 4.0"))
    config = campaign_config(tmp_path, "toy", *slurm_overrides(slurm_cluster, "budget.trials=9"),
                             f"task.path={task_dir}")
    first = Coordinator(config, config.campaign_folder())
    first._start_baseline()
    first.tick()  # submits the baseline array, then is thrown away while it runs
    with first.store.read() as session:
        submitted = {t.id: t.job_id for t in session.exec(select(Trial).where(Trial.status == "submitted")).all()}
    assert len(submitted) == 3
    calls_before = sbatch_calls(sbatch_log)
    del first
    second = Coordinator(config, config.campaign_folder())
    summary = second.run()
    assert summary.status == "finished"
    with second.store.read() as session:
        baseline = {t.id: t for t in session.exec(select(Trial).where(Trial.role == "baseline")).all()}
        per_trial = session.exec(select(Event.entity_id, func.count()).where(Event.kind == "trial.submitted")
                                 .group_by(col(Event.entity_id))).all()
    assert {i: t.job_id for i, t in baseline.items()} == submitted  # the same jobs, re-attached
    assert all(t.status == "succeeded" for t in baseline.values())
    assert all(count == 1 for _, count in per_trial)  # no trial was submitted twice
    assert sbatch_calls(sbatch_log) - calls_before == second.executor.submit_calls


def test_rerun_on_slurm_reproduces_a_local_trial(tmp_path: Path, slurm_cluster: object) -> None:
    config = campaign_config(tmp_path, "toy", "budget.trials=6", "coordination.teams=1")
    coordinator = Coordinator(config, config.campaign_folder(), )
    coordinator.run()
    con = sqlite3.connect(config.campaign_folder() / "state.db")
    trial_id, metric = con.execute("select id, metric from trial where status='succeeded' limit 1").fetchone()
    result = subprocess.run([sys.executable, "-m", "autosci_hpc.cli", "rerun", str(trial_id), "--executor", "slurm",
                             "-C", str(config.campaign_folder()), "--timeout", "180"],
                            capture_output=True, text=True, cwd=ROOT, timeout=240,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"metric {metric!r} (identical)" in result.stdout


@pytest.mark.slow
def test_a_trial_past_its_slurm_time_is_timeout(tmp_path: Path, slurm_cluster: object) -> None:
    # The job's limit (1 min) is shorter than the trial's own (10 min): the scheduler ends it.
    # (submitit's warning signal arrives first and stops the job, so Slurm records FAILED; the
    # result file carries the class.)
    store, executor, requests = direct(tmp_path, slurm_cluster, [{"behaviour": "hang"}], timeout_min=1,
                                       time_limit_s=600)
    trial = drain(store, executor, timeout=300)[requests[0].trial_id]
    assert trial.status == "failed" and trial.failure_class == "timeout", trial.failure_reason
    assert "time limit" in trial.failure_reason


def test_arrays_larger_than_the_limit_are_chunked_from_zero(tmp_path: Path, slurm_cluster: object,
                                                            sbatch_log: Path) -> None:
    task = load_task(FIXTURE_TASKS / "toy")
    executor = SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": 5,
                                                      "slurm_partition": getattr(slurm_cluster, "partition")},
                                  max_array_size=4, job_name="autosci-chunks", min_poll_s=0.5)
    requests = [task_request(task, tmp_path / "campaign", trial_id=i, folder=tmp_path / "t" / str(i),
                             snapshot_dir=task.program_dir, overrides={"x": i / 10}, seed=0, time_limit_s=60)
                for i in range(1, 11)]
    jobs = executor.submit(requests)
    assert sbatch_calls(sbatch_log) == executor.submit_calls == 3  # 4 + 4 + 2
    assert [j.array_index for j in jobs] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert len({j.job_id.split("_")[0] for j in jobs}) == 3
    for job in jobs:
        deadline = time.monotonic() + 120
        while not (Path(requests[job.trial_id - 1].folder) / RESULT_FILE).exists():
            assert time.monotonic() < deadline
            time.sleep(0.3)


def test_gres_from_the_campaign_config_reaches_the_trial(tmp_path: Path, slurm_cluster: object) -> None:
    from autosci_hpc.config import load_config

    cfg = load_config(None, [f"executor.slurm.partition={getattr(slurm_cluster, 'gpu_partition')}",
                             "executor.slurm.gres=gpu:h100:1", "executor.slurm.time_min=5",
                             "executor.slurm.setup=[export AUTOSCI_SETUP_RAN=1]"]).executor.slurm
    executor = SlurmTrialExecutor.from_config(tmp_path / "jobs", cfg, job_name="autosci-gres", time_limit_s=60)
    store, requests = make_trials(tmp_path, [{"x": 0.3}])
    submit(store, executor, requests)
    trial = drain(store, executor)[requests[0].trial_id]
    assert trial.status == "succeeded"
    assert trial.conditions["devices"] != ""  # one fake H100 was allocated
    submission = next((tmp_path / "jobs").rglob("*_submission.sh")).read_text()
    assert "--gres=gpu:h100:1" in submission and "export AUTOSCI_SETUP_RAN=1" in submission


def test_compare_runs_its_arms_on_the_cluster(tmp_path: Path, slurm_cluster: object, sbatch_log: Path) -> None:
    """`autosci compare` on SLURM: two arms at once (--parallel 2), every trial an array task."""
    out = tmp_path / "cmp"
    result = subprocess.run(
        [sys.executable, "-m", "autosci_hpc.cli", "compare", str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
         f"task.path={FIXTURE_TASKS / 'toy'}", "budget.trials=9", "coordination.poll_interval_s=0.1",
         *slurm_overrides(slurm_cluster), "--arms", "single,decentralized", "--seeds", "1", "--parallel", "2",
         "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "report.html").is_file()
    for arm in ("single", "decentralized"):
        with sqlite3.connect(f"file:{out / f'{arm}-s0' / 'state.db'}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT executor, job_id, status FROM trial").fetchall()
            mode = conn.execute("SELECT mode FROM campaign").fetchone()[0]
        assert mode == arm and len(rows) >= 6
        assert all(executor == "slurm" and job_id for executor, job_id, _ in rows)
    assert sbatch_calls(sbatch_log) > 0


def _recovery_helpers():  # noqa: ANN202 - tests/coordination/test_recovery.py, as a module
    import importlib.util

    spec = importlib.util.spec_from_file_location("recovery_helpers",
                                                  ROOT / "tests" / "coordination" / "test_recovery.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _slow_toy(tmp_path: Path, sleep: float = 4.0) -> Path:
    task_dir = tmp_path / "slow_toy"
    shutil.copytree(FIXTURE_TASKS / "toy", task_dir)
    config_file = task_dir / "program" / "config.yaml"
    config_file.write_text(config_file.read_text().replace("sleep: 0.0", f"sleep: {sleep}"))
    return task_dir


def test_a_crash_between_sbatch_and_its_commit_submits_nothing_twice(tmp_path: Path, slurm_cluster: object,
                                                                     sbatch_log: Path) -> None:
    """The submit gap on the real cluster: `autosci coordinate` dies (kill -9) after sbatch returned and
    before it recorded the job ids; the next one finds the array by its job name and submits it never
    again. Counted from the sbatch wrapper's log and the job folders, not from the database."""
    recovery = _recovery_helpers()
    check_consistent, coordinate = recovery.check_consistent, recovery.coordinate
    folder = tmp_path / "campaign"
    overrides = slurm_overrides(slurm_cluster)
    crashed = coordinate(folder, *overrides, "--inline-agents", fault="submitted:2", timeout=600)
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    calls_at_crash = sbatch_calls(sbatch_log)
    resumed = coordinate(folder, *overrides, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    con = check_consistent(folder)
    found = con.execute("select json_extract(data, '$.found') from event where kind='trials.reconciled'").fetchone()[0]
    assert found != "{}"  # the stranded batch was matched at the scheduler
    arrays = {row[0].split("_")[0] for row in con.execute("select job_id from trial")}
    assert sbatch_calls(sbatch_log) == len(arrays) and calls_at_crash == 2


def test_a_scancel_of_a_running_trial_is_retried_and_blames_nothing(tmp_path: Path, slurm_cluster: object) -> None:
    """An operator cancels one running baseline seed and one running candidate: both are retried on
    their seed, in a folder of their own; the campaign finishes, and no idea is failed for it."""
    config = campaign_config(tmp_path, "toy", *slurm_overrides(slurm_cluster, "budget.trials=12",
                                                                "executor.max_retries=2", "coordination.teams=1"),
                             f"task.path={_slow_toy(tmp_path)}")
    cancelled: dict[str, int] = {}

    def cancel_one_of_each(coordinator: Coordinator) -> None:
        with coordinator.store.read() as session:
            running = session.exec(select(Trial).where(Trial.status == "submitted")
                                   .where(Trial.attempt == 0)).all()
        for trial in running:
            if trial.role in cancelled or trial.role == "replicate":
                continue
            state = subprocess.run(["squeue", "-h", "-j", trial.job_id, "-o", "%T"], capture_output=True,
                                   text=True).stdout.strip()
            if state == "RUNNING":  # the state it needs, observed: no timing involved
                subprocess.run(["scancel", trial.job_id], check=True)
                cancelled[trial.role] = trial.id or 0

    coordinator = Coordinator(config, config.campaign_folder(), on_tick=cancel_one_of_each)
    assert coordinator.run().status == "finished"
    assert set(cancelled) == {"baseline", "candidate"}
    with coordinator.store.read() as session:
        for trial_id in cancelled.values():
            lost = session.get(Trial, trial_id)
            assert lost is not None and lost.failure_class == "cancelled" and lost.superseded_by
            retry = session.get(Trial, lost.superseded_by)
            assert retry is not None and retry.seed == lost.seed and retry.attempt == 1
            assert retry.folder != lost.folder
        candidate = session.get(Trial, cancelled["candidate"])
        assert candidate is not None
        proposal = session.exec(select(Event).where(Event.kind == "proposal.concluded")
                                .where(Event.entity_id == candidate.proposal_id)).first()
    assert proposal is not None and proposal.data["outcome"] != "failed"


def _node_of(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True).stdout.strip()


def test_a_node_set_down_and_back_mid_campaign_loses_and_blames_nothing(tmp_path: Path,
                                                                        slurm_cluster: object) -> None:
    """The node a candidate runs on is set DOWN (its jobs are killed, as in a node failure), then
    RESUMEd: the lost trials come back (requeued by Slurm or retried by the campaign), the campaign
    finishes, every trial row was submitted once, and no idea is failed for the node's fault."""
    config = campaign_config(tmp_path, "toy", *slurm_overrides(slurm_cluster, "budget.trials=12",
                                                                "executor.max_retries=3", "coordination.teams=1"),
                             f"task.path={_slow_toy(tmp_path)}")
    downed: dict[str, object] = {}

    def down_then_back(coordinator: Coordinator) -> None:
        if downed.get("back"):
            return
        if "node" in downed:  # the node went down on an earlier tick: its jobs are gone; bring it back
            # (`resume` is refused as an invalid state when the controller already returned it to service)
            subprocess.run(["scontrol", "update", f"nodename={downed['node']}", "state=resume"], capture_output=True)
            downed["back"] = True
            return
        with coordinator.store.read() as session:
            running = session.exec(select(Trial).where(Trial.status == "submitted")
                                   .where(Trial.role == "candidate")).all()
        for trial in running:
            node = _node_of(trial.job_id)
            if node:  # observed running on a node: no timing involved
                subprocess.run(["scontrol", "update", f"nodename={node}", "state=down",
                                "reason=autosci-test"], check=True)
                downed.update(node=node, trial=trial.id, job=trial.job_id)
                return

    coordinator = Coordinator(config, config.campaign_folder(), on_tick=down_then_back)
    try:
        assert coordinator.run().status == "finished"
    finally:
        if "node" in downed and not downed.get("back"):
            subprocess.run(["scontrol", "update", f"nodename={downed['node']}", "state=resume"])
    assert downed.get("back"), "no candidate was ever seen running"
    con = sqlite3.connect(config.campaign_folder() / "state.db")
    submitted, finished = con.execute("select trials_submitted, trials_finished from campaign").fetchone()
    rows = con.execute("select count(*) from trial").fetchone()[0]
    assert submitted == finished == rows
    assert con.execute("select count(*) from trial where status not in ('succeeded', 'failed')").fetchone()[0] == 0
    lost = con.execute("select failure_class, superseded_by from trial where id = ?", (downed["trial"],)).fetchone()
    shown = subprocess.run(["scontrol", "show", "job", str(downed["job"])], capture_output=True, text=True).stdout
    requeued = "Restarts=0" not in shown and "Restarts=" in shown
    # The node's fall really hit the trial: Slurm requeued its job (and it finished on the node's return),
    # or it ended as lost and the campaign retried it.
    assert (lost[0] == "" and requeued) or lost[1] is not None, (lost, shown[:400])
    failed = con.execute("select count(*) from proposal where outcome = 'failed'").fetchone()[0]
    assert failed == 0  # the node's fault was nobody's idea
