"""GPU trials on one machine, with fake GPU lists (no GPU needed): which GPUs the executor finds,
the CUDA_VISIBLE_DEVICES each trial's program sees, gangs of trials sharing a GPU (padded with
ballast, never started short), the placement recorded with every trial, GPU-hour accounting and
the report's name for the resource."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any, Optional

import pytest
from sqlmodel import select

from autosci_hpc.config import ConfigError, load_config
from autosci_hpc.state.budget import gpu_hours_used
from autosci_hpc.execution import gpus
from autosci_hpc.execution.local import LocalTrialExecutor
from autosci_hpc.execution.results import read_result
from autosci_hpc.execution.sandbox import probe
from autosci_hpc.state import Store
from autosci_hpc.state.models import Campaign, Trial
from helpers import FIXTURE_TASKS, drain, ranks_trials, submit


def fake_smi(tmp_path: Path, indices: str) -> str:
    tool = tmp_path / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\nprintf '{indices}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return str(tool)


def test_the_visible_gpus_come_from_cuda_visible_devices_else_nvidia_smi_else_none(tmp_path: Path) -> None:
    smi = fake_smi(tmp_path, "0\\n1\\n2\\n")
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, smi) == ["2", "3"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, smi) == []
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, smi) == ["1"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-5e1f,GPU-77aa"}, smi) == ["GPU-5e1f", "GPU-77aa"]
    assert gpus.visible_gpus({}, smi) == ["0", "1", "2"]
    assert gpus.visible_gpus({}, str(tmp_path / "absent")) == []
    # a count takes the first N visible ones, a list is taken as it is
    assert gpus.resolve_gpus(2, {"CUDA_VISIBLE_DEVICES": "4,5,6"}, smi) == ["4", "5"]
    assert gpus.resolve_gpus(2, {}, str(tmp_path / "absent")) == ["0", "1"]
    assert gpus.resolve_gpus([1, "3"], {}, smi) == ["1", "3"]
    assert gpus.resolve_gpus(0, {}, smi) == []


def test_a_gpu_task_is_refused_in_one_line_where_the_machine_shows_too_few_gpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    config = load_config(None, [f"task.path={FIXTURE_TASKS / 'ranks'}"])
    with pytest.raises(ConfigError, match=r"executor.local.gpus: the task's trials use 1 GPU\(s\) each"):
        gpus.with_task_gpus(config, 1)
    # the campaign's own setting wins: task.gpus=0 runs the task on the CPU
    cpu = gpus.with_task_gpus(load_config(None, ["task.gpus=0"]), 1)
    assert cpu.task.gpus == 0
    assert gpus.with_task_gpus(load_config(None, ["executor.local.gpus=[7]"]), 1).task.gpus == 1


def seen(request: Any) -> dict[str, Any]:
    return json.loads((Path(request.folder) / "artifacts" / "seen.json").read_text())


def test_each_trial_sees_its_slots_gpu_and_a_short_gang_is_filled_with_ballast(tmp_path: Path) -> None:
    """Two fake GPUs, two trials per GPU, three trials: GPU "3" runs two of them, GPU "5" the third
    next to a ballast run; every trial's program saw its own GPU (not the empty string submitit sets)."""
    store, requests = ranks_trials(tmp_path, 3)
    executor = LocalTrialExecutor(tmp_path / "jobs", timeout_min=2, gpus=["3", "5"], gpus_per_trial=1,
                                  trials_per_gpu=2)
    assert executor.capacity == 4
    submit(store, executor, requests)
    # Both GPUs hold a gang now: no slot is free until a whole gang has ended.
    assert executor.free_groups() == [] and executor.capacity == 3
    # Even with every result taken in (none outstanding), no slot opens before a whole gang has ended.
    assert executor.room(0) == 0
    with pytest.raises(RuntimeError, match="free GPU group"):
        executor.submit(requests[:1])
    trials = drain(store, executor, grace_s=1)
    assert all(t.status == "succeeded" for t in trials.values())
    devices = [seen(r)["ranks"][0]["visible"] for r in requests]
    assert devices == ["3", "3", "5"]
    placements = [trials[r.trial_id].conditions for r in requests]
    assert [p["slot"] for p in placements] == [0, 1, 2]
    assert all(p["share"] == 2 and p["executor"] == "local" and not p["ballast"] for p in placements)
    # GPU "3" served two trials, GPU "5" one (its ballast ran for it): what each is charged with
    assert [p["gpus"] for p in placements] == [0.5, 0.5, 1.0]
    assert [p["devices"] for p in placements] == ["3", "3", "5"]
    # The ballast ran the third trial's program on GPU "5", slot 3, in its own folder.
    (ballast,) = sorted((tmp_path / "jobs" / "ballast").glob("run-*"))
    result = read_result(ballast, requests[2].trial_id)
    assert result is not None and result.conditions["ballast"] is True
    assert result.conditions["slot"] == 3 and seen_of(ballast)["visible"] == "5"
    for job in executor._gangs[1]:
        job.wait()
    assert sorted(executor.free_groups()) == [0, 1] and executor.capacity == 4 and executor.room(3) == 4


def seen_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "artifacts" / "seen.json").read_text())["ranks"][0]


def test_cpu_trials_of_the_local_executor_see_no_gpu_and_record_a_cpu_placement(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    store, requests = ranks_trials(tmp_path, 1)
    executor = LocalTrialExecutor(tmp_path / "jobs", max_concurrent=1, timeout_min=2)
    submit(store, executor, requests)
    trial = drain(store, executor, grace_s=1)[requests[0].trial_id]
    assert trial.status == "succeeded" and seen(requests[0])["ranks"][0]["visible"] == ""
    assert trial.conditions["gpus"] == 0.0 and trial.conditions["devices"] == "" and trial.conditions["gpu"] == []


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_a_trial_of_two_gpus_runs_two_ranks_that_meet(tmp_path: Path, sandbox: str) -> None:
    """One trial on two (fake) GPUs: two processes, each with its own GPU by LOCAL_RANK, which met in a
    gloo process group (in the sandbox too, whose network is its own loopback); rank 0 alone wrote."""
    pytest.importorskip("torch")
    if sandbox == "bwrap" and not probe("bwrap")[0]:
        pytest.skip("bubblewrap does not work on this machine")
    store, requests = ranks_trials(tmp_path, 1, sandbox)
    executor = LocalTrialExecutor(tmp_path / "jobs", timeout_min=3, gpus=["0", "1"], gpus_per_trial=2)
    submit(store, executor, requests)
    trial = drain(store, executor, grace_s=1)[requests[0].trial_id]
    assert trial.status == "succeeded", trial.failure_reason + trial.log_tail
    record = seen(requests[0])
    assert record["sum"] == 3 and record["writer"] == 0 and trial.metric == 3.0
    assert sorted(r["device"] for r in record["ranks"]) == ["0", "1"]
    assert sorted(r["rank"] for r in record["ranks"]) == [0, 1]
    assert len({r["pid"] for r in record["ranks"]}) == 2 and len({r["master"] for r in record["ranks"]}) == 1
    assert trial.conditions["ranks"] == 2 and trial.conditions["gpus"] == 2.0


def test_gpu_hours_count_what_each_trial_held(tmp_path: Path) -> None:
    """A trial that shared a GPU with three others counts a quarter of its hours; a trial without
    recorded run conditions counts what the config says (here a whole GPU); a CPU trial one slot."""
    config = load_config(None, ["task.gpus=1"])
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="t", mode="single"))
        for i, conditions in enumerate([{"gpus": 0.25}, {"gpus": 0.25}, {}]):
            session.add(Trial(role="candidate", group=f"g{i}", snapshot_id="s", config_signature=f"{i}",
                              seed=0, status="succeeded", duration_s=3600.0, conditions=conditions))
    with store.read() as session:
        assert gpu_hours_used(session, config) == pytest.approx(0.25 + 0.25 + 1.0)
        assert gpu_hours_used(session, load_config(None, [])) == pytest.approx(0.25 + 0.25 + 1.0)
        trials = session.exec(select(Trial)).all()
    assert len(trials) == 3


def test_the_report_names_gpu_hours_for_a_local_gpu_campaign_and_slot_hours_for_cpu_trials() -> None:
    import pandas as pd

    from autosci_hpc.report import metrics
    from autosci_hpc.report.load import CampaignData

    def data(config: dict[str, Any], conditions: list[dict[str, Any]],
             environments: Optional[list[dict[str, Any]]] = None) -> CampaignData:
        n = len(conditions)
        trials = pd.DataFrame({"id": range(1, n + 1), "status": ["succeeded"] * n,
                               "duration_s": [1800.0] * n, "conditions": conditions,
                               "environment": environments or [{}] * n,
                               "finished_at": pd.to_datetime([1.0] * n, unit="s", utc=True)})
        champions = pd.DataFrame({"id": [1], "metric_mean": [1.0], "trial_ids": [[1]],
                                  "promoted_at": pd.to_datetime([0.0], unit="s", utc=True)})
        return CampaignData(folder=Path("c"), name="c", mode="single", task_name="t", status="finished",
                            config=config, campaign={}, metric="m", direction="minimize", trials=trials,
                            champions=champions)

    local_gpu = data({"executor": {"kind": "local"}}, [{"gpus": 0.5}] * 2)
    assert metrics.compute_unit(local_gpu) == "GPU-hours"
    assert metrics.gpu_hours_used(local_gpu) == pytest.approx(0.5)
    # The report reads a database read-only: one from before the record was one (its placement in the
    # environment) counts the same.
    unmigrated = data({"executor": {"kind": "local"}}, [{}] * 2, [{"placement": {"gpus": 0.5}}] * 2)
    assert metrics.compute_unit(unmigrated) == "GPU-hours"
    assert metrics.gpu_hours_used(unmigrated) == pytest.approx(0.5)
    by_config = data({"task": {"gpus": 1}, "executor": {"kind": "local", "local": {"trials_per_gpu": 4}}},
                     [{}])
    assert metrics.compute_unit(by_config) == "GPU-hours"
    assert metrics.gpu_hours_used(by_config) == pytest.approx(0.125)
    cpu = data({"executor": {"kind": "local"}}, [{"gpus": 0.0}])
    assert metrics.compute_unit(cpu) == "slot-hours (CPU trials)"


def test_the_agents_see_a_gang_of_slots_per_gpu(tmp_path: Path) -> None:
    from autosci_hpc.execution.registry import make_executor

    def capacity(config: Any) -> int:  # the one figure the coordinator and the agents both read
        return make_executor(config, tmp_path / "jobs", 60).capacity

    config = load_config(None, ["task.gpus=1", "executor.local.gpus=[0,1]", "executor.local.trials_per_gpu=4",
                                "executor.local.max_concurrent=1"])
    assert capacity(config) == 8
    assert capacity(load_config(None, ["task.gpus=2", "executor.local.gpus=[0,1,2]"])) == 1
    assert capacity(load_config(None, ["task.gpus=0", "executor.local.max_concurrent=3"])) == 3


def test_the_budget_counts_the_gpus_the_node_reports(tmp_path: Path) -> None:
    """The node's record of a trial placed on a GPU shared four ways passes ingestion's cleaning whole,
    and the GPU-hour budget reads the quarter GPU it was charged with from the stored record."""
    from autosci_hpc.execution.conditions import observe
    from autosci_hpc.state import conditions

    reported = observe(gpus.placement_for(0, 1, ["0"], 4))
    stored = conditions.clean(reported)
    assert stored == {k: v for k, v in reported.items() if v is not None} and stored["share"] == 4
    store = Store(tmp_path / "campaign")
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(tmp_path), task_name="t", mode="single"))
        session.add(Trial(role="candidate", group="g", snapshot_id="s", config_signature="s|", seed=0,
                          status="succeeded", duration_s=3600.0, conditions=stored))
    with store.read() as session:
        assert gpu_hours_used(session, load_config(None, ["task.gpus=1"])) == pytest.approx(0.25)


def test_a_resumed_campaign_keeps_its_gpus_and_sharing() -> None:
    stored = load_config(None, ["task.gpus=1", "executor.local.trials_per_gpu=4"]).model_dump(mode="json")
    same = load_config(None, ["task.gpus=1", "executor.local.trials_per_gpu=4"])
    assert gpus.sharing_change(stored, same) == ""
    unshared = load_config(None, ["task.gpus=1"])
    assert "trials_per_gpu cannot change to 1" in gpus.sharing_change(stored, unshared)
    assert "task.gpus cannot change to 2" in gpus.sharing_change(
        stored, load_config(None, ["task.gpus=2", "executor.local.trials_per_gpu=4"]))
    # a campaign stored before GPUs were recorded: nothing to compare
    assert gpus.sharing_change({}, same) == ""


@pytest.mark.slow
def test_a_campaign_on_a_shared_gpu_never_runs_a_trial_without_its_neighbour(tmp_path: Path) -> None:
    """A whole campaign (the CLI, the coordinator, the offline agents) on one fake GPU shared by two:
    every trial records the share and that its gang met, and each trial that had no other trial beside
    it ran next to a ballast run of its own gang, however late the ballast's process started."""
    import subprocess
    import sys

    from helpers import ROOT

    folder = tmp_path / "campaign"
    result = subprocess.run(
        [sys.executable, "-m", "autosci_hpc.cli", "run",
         str(ROOT / "configs" / "campaign" / "toy_smoke.yaml"),
         f"task.path={FIXTURE_TASKS / 'ranks'}", f"campaign.folder={folder}", "budget.trials=6",
         "executor.local.gpus=[0]", "executor.local.trials_per_gpu=2", "executor.sandbox=none", "--quiet"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    store = Store(folder)
    with store.read() as session:
        trials = [t for t in session.exec(select(Trial)).all() if t.status in ("succeeded", "failed")]
    assert len(trials) >= 4 and all(t.status == "succeeded" for t in trials)
    placements = [t.conditions for t in trials]
    assert all(p["share"] == 2 and p["devices"] == "0" and p["together"] is True for p in placements)
    alone = [t for t, p in zip(trials, placements) if p["gpus"] == 1.0]
    from autosci_hpc.execution.results import RESULT_FILE

    ballast = [json.loads((path / RESULT_FILE).read_text())["result"]
               for path in sorted((folder / "jobs" / "ballast").glob("run-*"))]
    assert len(ballast) == len(alone) and all(b["conditions"]["ballast"] and b["conditions"]["together"]
                                              for b in ballast)
    for trial in alone:
        mine = read_result(Path(trial.folder), trial.id)
        assert mine is not None
        beside = [b for b in ballast
                  if b["started_at"] < mine.finished_at and mine.started_at < b["finished_at"]]
        assert beside, f"trial {trial.id} ran without a neighbour"


def test_the_members_of_a_gang_wait_for_each_other_before_their_steps(tmp_path: Path) -> None:
    """A member whose process starts late still runs beside the others: the first to arrive waits (here
    until the second is let in, a step the test controls), and both record that they met; a member whose
    neighbour never comes runs anyway after its wait and records that it ran with fewer."""
    import threading

    folder = str(tmp_path / "gang")
    first = gpus.placement_for(0, 0, ["0"], 2, trials=1, gang=folder)
    second = gpus.placement_for(0, 1, ["0"], 2, ballast=True, gang=folder)
    results: list[gpus.Placement] = []
    waiter = threading.Thread(target=lambda: results.append(gpus.meet(first, wait_s=60)))
    waiter.start()
    while not (tmp_path / "gang" / "0").exists():  # the first member has arrived and is waiting
        waiter.join(0.01)
    assert waiter.is_alive() and not results
    late = gpus.meet(second, wait_s=60)
    waiter.join(60)
    assert late.together is True and [r.together for r in results] == [True]
    alone = gpus.placement_for(0, 0, ["0"], 2, trials=1, gang=str(tmp_path / "other"))
    assert gpus.meet(alone, wait_s=0.2).together is False
    assert gpus.meet(gpus.placement_for(0, 0, ["0"], 1)).together is None  # no gang: nobody to wait for


def test_a_restarted_coordinator_keeps_the_gpus_its_last_process_left_running_closed(tmp_path: Path) -> None:
    """A coordinator process starts a gang (one trial beside a ballast run) on GPU "3" of two, then is
    gone; the next process on the same folder finds that gang still running: GPU "3" stays closed (no
    new gang joins it), GPU "5" is free, the running trial counts in the capacity, and cancelling the
    adopted trial takes its ballast down too, after which both GPUs are free again."""
    store, requests = ranks_trials(tmp_path, 1)
    long = [r.model_copy(update={"overrides": {"sleep": 600.0}}) for r in requests]
    first = LocalTrialExecutor(tmp_path / "jobs", timeout_min=15, gpus=["3", "5"], gpus_per_trial=1,
                               trials_per_gpu=2)
    (job_id,) = submit(store, first, long)
    jobs = list(first._gangs[0])
    assert len(jobs) == 2  # the trial and its ballast
    try:
        restarted = LocalTrialExecutor(tmp_path / "jobs", timeout_min=15, gpus=["3", "5"], gpus_per_trial=1,
                                       trials_per_gpu=2)
        assert restarted.free_groups() == [1] and restarted.room(0) == 2
        assert restarted.capacity == 1 + 2  # the adopted trial, and a gang of two on GPU "5"
        with pytest.raises(RuntimeError, match="free GPU group"):
            restarted.submit(requests * 3)
        restarted.cancel([job_id])
        for job in jobs:  # both the trial's controller and the ballast's end (SIGINT from the new process)
            job.wait()
        assert restarted.free_groups() == [0, 1] and restarted.capacity == 4
    finally:
        for job in jobs:
            job.cancel(check=False)


def test_a_live_controller_no_gang_record_names_closes_every_gpu(tmp_path: Path) -> None:
    """A crash between a gang's start and its record: the next process cannot tell which GPU the
    gang's controllers hold, so it starts nothing on any GPU until they have ended."""
    store, requests = ranks_trials(tmp_path, 1)
    long = [r.model_copy(update={"overrides": {"sleep": 600.0}}) for r in requests]
    first = LocalTrialExecutor(tmp_path / "jobs", timeout_min=15, gpus=["3", "5"], gpus_per_trial=1,
                               trials_per_gpu=2)
    (job_id,) = submit(store, first, long)
    for record in (tmp_path / "jobs" / "gangs").glob("*.json"):
        record.write_text("{\"group\": 0, \"tri")  # torn: as good as never written
    try:
        restarted = LocalTrialExecutor(tmp_path / "jobs", timeout_min=15, gpus=["3", "5"], gpus_per_trial=1,
                                       trials_per_gpu=2)
        assert restarted.free_groups() == [] and restarted.room(0) == 0
        first.cancel([job_id])
        for job in first._gangs[0]:
            job.wait()
        assert restarted.free_groups() == [0, 1]
    finally:
        for job in first._gangs[0]:
            job.cancel(check=False)
