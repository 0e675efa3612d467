"""The same sandbox inside SLURM array tasks: the wrap happens on the node, where the trial starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from autosci_hpc.execution.slurm import SlurmTrialExecutor
from autosci_hpc.task import load_task

from helpers import drain, submit
from hostile import hostile_task, probe_of, sealed_request, skip_without_bwrap
from test_trial_code import campaign

pytestmark = pytest.mark.slurm


def test_a_hostile_trial_in_a_slurm_array_task_is_sandboxed(tmp_path: Path, slurm_cluster: object) -> None:
    skip_without_bwrap()
    from autosci_hpc.state import Store
    from autosci_hpc.state.models import Trial

    folder, targets = campaign(tmp_path)
    extra = "import os as _o6\nprint('ENV', sorted(_o6.environ))\n"
    task = load_task(hostile_task(tmp_path, targets, extra))
    store = Store(folder)
    requests = []
    with store.write() as session:
        for seed in (0, 1):  # two requests: one array job of two tasks
            trial = Trial(role="candidate", group="g", snapshot_id="s", config_signature=f"s|{seed}",
                          seed=seed, status="submitted")
            session.add(trial)
            session.flush()
            assert trial.id is not None
            trial.folder = str(folder / "trials" / f"{trial.id:06d}")
            requests.append(sealed_request(task, folder, Path(trial.folder), "bwrap", seed=seed,
                                           data_dir=str(folder / "data" / "visible")))
    executor = SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": 5,
                                                      "slurm_partition": getattr(slurm_cluster, "partition")},
                                  job_name="autosci-hostile", min_poll_s=0.5, max_poll_s=2)
    job_ids = submit(store, executor, requests)
    assert len({j.split("_")[0] for j in job_ids}) == 1  # one array
    trials = drain(store, executor)
    for request in requests:
        trial = trials[request.trial_id]
        assert trial.status == "succeeded", (trial.failure_class, trial.failure_reason, trial.log_tail)
        probe = probe_of(Path(request.folder))
        assert not any(probe["read"].values()) and not any(probe["wrote"].values()), probe
        assert probe["stolen_key"] == "" and probe["proc"]["pids_seen"] <= 2 and not probe["forum_insert"]
        names = (Path(request.folder) / "trial.log").read_text().split("ENV ", 1)[1].splitlines()[0]
        assert "SLURM_JOB_ID" not in names and "SUBMITIT" not in names
