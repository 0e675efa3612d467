"""A few kill -9 / restart cycles of a running campaign (benchmarks/kill_restart.py runs 100)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from helpers import ROOT


def _load():  # noqa: ANN202 - the benchmark script, loaded as a module
    spec = importlib.util.spec_from_file_location("kill_restart", ROOT / "benchmarks" / "kill_restart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kill_restart_cycles_lose_and_double_nothing(tmp_path: Path) -> None:
    module = _load()
    report = module.run(cycles=4, folder=tmp_path / "campaign", trials=15, seed=1, min_s=0.2, max_s=2.0,
                        mid_run_only=True)
    # Killed while a coordinator ran the campaign past its baseline (not during start-up), resumed each time.
    assert report["killed_mid_run"] >= 2 and report["restarts"] >= 1
    assert report["consistent"], report
    assert report["executions"] == report["trial_rows"]  # counted from the job folders, not the rows


def test_the_check_fails_on_a_planted_double_execution(tmp_path: Path) -> None:
    """The check can fail: one trial of a finished campaign really run a second time (a second job
    submitted for it, as a coordinator that lost the ids of its last batch would) is caught, though
    every row and event of the database still looks right."""
    from autosci_hpc.coordination.coordinator import Coordinator
    from autosci_hpc.execution.local import LocalTrialExecutor
    from helpers import campaign_config

    module = _load()
    config = campaign_config(tmp_path, "toy", "budget.trials=6", "coordination.teams=1")
    coordinator = Coordinator(config, config.campaign_folder())
    assert coordinator.run(max_ticks=2000).status == "finished"
    folder = config.campaign_folder()
    clean = module.check(folder)
    assert module.consistent(clean), clean
    with coordinator.store.read() as session:
        from sqlmodel import select

        from autosci_hpc.state.models import Trial

        trial = session.exec(select(Trial).where(Trial.status == "succeeded")).first()
    assert trial is not None
    again = LocalTrialExecutor(folder / "jobs", max_concurrent=1, timeout_min=2)
    (job,) = again.submit([coordinator._request(trial)])
    again._jobs[job.job_id].wait()
    doubled = module.check(folder)
    assert doubled["max_executions_per_trial"] == 2 and doubled["executions"] == doubled["trial_rows"] + 1
    assert not module.consistent(doubled)
    # What the database alone says is unchanged: only the count of real executions tells.
    assert {k: v for k, v in doubled.items() if "execution" not in k} == \
        {k: v for k, v in clean.items() if "execution" not in k}
