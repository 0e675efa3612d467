"""The fake scheduler the SLURM executor's tests run against where no cluster is installed.

It must behave like Slurm where the executor relies on it: sbatch accepts submitit's array script and
prints the job id, the array's tasks really run (srun included), sacct/squeue report their states,
scancel ends them, and every submission is logged (the count the consistency checks read).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from autosci_hpc.execution.results import read_result
from autosci_hpc.execution.slurm import SlurmTrialExecutor
from helpers import make_trials


def test_the_fake_scheduler_runs_a_submitit_array_and_reports_it(tmp_path: Path, fake_slurm) -> None:
    assert Path(shutil.which("srun") or "").parent == fake_slurm.bin  # no real Slurm is used
    store, requests = make_trials(tmp_path, [{"x": 0.1}, {"x": 0.2}])
    executor = SlurmTrialExecutor(tmp_path / "jobs", {"timeout_min": 5}, job_name="autosci-fake", min_poll_s=0.0)
    jobs = executor.submit(requests)
    assert [j.array_index for j in jobs] == [0, 1] and len(fake_slurm.submissions()) == 1
    deadline = time.monotonic() + 120
    while not all(s.terminal for s in executor.states([j.job_id for j in jobs]).values()):
        assert time.monotonic() < deadline, fake_slurm.state()
        time.sleep(0.2)
    states = executor.states([j.job_id for j in jobs])
    assert [states[j.job_id].raw for j in jobs] == ["COMPLETED", "COMPLETED"]
    for request in requests:
        result = read_result(Path(request.folder), request.trial_id)
        assert result is not None and result.status == "succeeded"
    assert fake_slurm.submissions()[0]["name"] == "autosci-fake"
