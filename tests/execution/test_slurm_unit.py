"""The SLURM executor's parsing, classification, polling cadence and environment hygiene.

These run without a cluster: the scheduler's answers are given as text, the way sacct and squeue
print them, and submitit finds the fake scheduler's programs on PATH (`fake_slurm.py`) instead of a
real `srun`. The same executor against the real single-node cluster is in tests/slurm/.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from autosci_hpc.execution.slurm import SlurmTrialExecutor, clean_slurm_env, parse_state_lines, to_job_state


def test_state_lines_expand_pending_array_ranges() -> None:
    text = "41_0|COMPLETED\n41_1|CANCELLED by 0\n41_[2-4,7%2]|PENDING\n42|TIMEOUT\n\n"
    states = parse_state_lines(text)
    assert states["41_0"] == "COMPLETED" and states["41_1"] == "CANCELLED"
    assert [k for k, v in states.items() if v == "PENDING"] == ["41_2", "41_3", "41_4", "41_7"]
    assert states["42"] == "TIMEOUT"


@pytest.mark.parametrize("raw,terminal,cls", [
    ("COMPLETED", True, "no_result"), ("FAILED", True, "program_error"), ("TIMEOUT", True, "timeout"),
    ("OUT_OF_MEMORY", True, "out_of_memory"), ("NODE_FAIL", True, "node_fail"), ("BOOT_FAIL", True, "node_fail"),
    ("PREEMPTED", True, "preempted"), ("CANCELLED+", True, "cancelled"), ("RUNNING", False, ""),
    ("PENDING", False, ""), ("REQUEUED", False, ""), ("COMPLETING", False, ""),
])
def test_slurm_states_map_to_failure_classes(raw: str, terminal: bool, cls: str) -> None:
    state = to_job_state(raw)
    assert state.terminal is terminal and state.failure_class == cls


class FakeScheduler:
    """Answers sacct/squeue/scontrol the way Slurm prints them, and counts the calls."""

    def __init__(self, sacct: str = "", sacct_rc: int = 0, sacct_err: str = "", squeue: str = "") -> None:
        self.sacct, self.sacct_rc, self.sacct_err, self.squeue = sacct, sacct_rc, sacct_err, squeue
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> "subprocess.CompletedProcess[str]":
        self.calls.append(argv)
        if argv[0] == "sacct":
            return subprocess.CompletedProcess(argv, self.sacct_rc, self.sacct, self.sacct_err)
        if argv[0] == "squeue":
            return subprocess.CompletedProcess(argv, 0, self.squeue, "")
        return subprocess.CompletedProcess(argv, 0, "MaxArraySize            = 7\n", "")


@pytest.fixture(autouse=True)
def no_real_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the fake scheduler's programs on PATH, ahead of any real Slurm (none is needed)."""
    from fake_slurm import FakeSlurm

    monkeypatch.setenv("PATH", FakeSlurm(tmp_path / "fake-slurm").path_env())


def executor(tmp_path: Path, fake: FakeScheduler, **kw: float) -> SlurmTrialExecutor:
    return SlurmTrialExecutor(tmp_path, {"timeout_min": 5}, job_name="autosci-t", runner=fake, **kw)  # type: ignore[arg-type]


def test_one_call_for_all_jobs_at_a_capped_rate(tmp_path: Path) -> None:
    # One job id reused by someone else's job (another name): it never answers for a trial.
    lines = [f"9_{i}|RUNNING|autosci-t-c1a2b3-5f.0" for i in range(300)] + ["10|COMPLETED|someone-else"]
    fake = FakeScheduler(sacct="\n".join(lines))
    ex = executor(tmp_path, fake, min_poll_s=0.2, max_poll_s=0.5)
    ids = [f"9_{i}" for i in range(300)] + ["10"]
    states = ex.states(ids)
    assert len(states) == 300 and "10" not in states and len(fake.calls) == 1
    assert fake.calls[0][:6] == ["sacct", "-X", "-P", "-n", "-j", "10,9"]
    assert fake.calls[0][-1] == "JobID,State,JobName"
    for _ in range(50):  # asked again at once: answered from the last poll, no new call
        ex.states(ids)
    assert len(fake.calls) == 1


def test_absent_jobs_are_never_finished_and_errors_back_off(tmp_path: Path) -> None:
    fake = FakeScheduler(sacct="9_0|COMPLETED|autosci-t\n")
    ex = executor(tmp_path, fake, min_poll_s=0.0, max_poll_s=60)
    states = ex.states(["9_0", "9_1"])
    assert states["9_0"].terminal and "9_1" not in states  # missing is unknown, not done
    fake.sacct_rc, fake.sacct_err = 1, "sacct: error: slurm_persist_conn_open: Socket timed out"
    ex._next_poll = 0.0
    assert ex.states(["9_0"])["9_0"].terminal  # last known state stands
    failed_at = len(fake.calls)
    assert ex._poll_interval >= 1.0 and ex._next_poll > time.monotonic()  # the next try waits...
    assert ex.states(["9_0"])["9_0"].terminal and len(fake.calls) == failed_at  # ...no call meanwhile
    before = ex._poll_interval
    ex._next_poll = 0.0
    ex.states(["9_0"])
    assert ex._poll_interval == min(ex.max_poll_s, before * 2)  # and each error doubles the wait


def test_a_pending_array_task_it_cancelled_ends_cancelled_though_slurm_names_it_no_more(tmp_path: Path) -> None:
    """Slurm keeps no trace of an array task cancelled while pending (neither squeue nor sacct names it):
    the executor that cancelled it says it ended cancelled, so its trial does not wait for ever."""
    fake = FakeScheduler(sacct="7_0|RUNNING|autosci-t\n7_1|PENDING|autosci-t\n")
    ex = executor(tmp_path, fake, min_poll_s=0.0)
    assert not ex.states(["7_0", "7_1"])["7_1"].terminal
    ex.cancel(["7_1"])
    assert fake.calls[-1] == ["scancel", "7_1"]
    fake.sacct = "7_0|RUNNING|autosci-t\n"
    states = ex.states(["7_0", "7_1"])
    assert not states["7_0"].terminal
    assert (states["7_1"].terminal, states["7_1"].failure_class) == (True, "cancelled")


def test_squeue_fallback_when_accounting_is_disabled(tmp_path: Path) -> None:
    fake = FakeScheduler(sacct_rc=1, sacct_err="sacct: error: Slurm accounting storage is disabled",
                         squeue="5_0|RUNNING|autosci-t\n5_1|CANCELLED|autosci-t-k.0\n")
    ex = executor(tmp_path, fake, min_poll_s=0.0)
    states = ex.states(["5_0", "5_1"])
    assert not states["5_0"].terminal and states["5_1"].failure_class == "cancelled"
    assert fake.calls[-1][0] == "squeue" and "-r" in fake.calls[-1]
    ex._next_poll = 0.0
    ex.states(["5_0"])
    assert fake.calls[-1][0] == "squeue"  # accounting is not asked again


def test_max_array_size_is_read_from_the_cluster(tmp_path: Path) -> None:
    fake = FakeScheduler()
    assert executor(tmp_path, fake).max_array_size() == 7


def test_nested_submission_hides_the_parent_job_but_keeps_slurm_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    monkeypatch.setenv("SBATCH_PARTITION", "other")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    with clean_slurm_env():
        assert "SLURM_ARRAY_JOB_ID" not in os.environ and "SLURM_CPUS_PER_TASK" not in os.environ
        assert "SBATCH_PARTITION" not in os.environ
        assert os.environ["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    assert os.environ["SLURM_ARRAY_JOB_ID"] == "77"


def test_transient_sbatch_errors_are_retried_and_policy_errors_are_not(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from autosci_hpc.execution import slurm as slurm_module
    from autosci_hpc.execution.slurm import SubmissionError

    monkeypatch.setattr(slurm_module.time, "sleep", lambda s: None)
    ex = executor(tmp_path, FakeScheduler())
    answers: list[object] = [RuntimeError("sbatch: error: Socket timed out on send/recv operation"),
                             [type("Job", (), {"job_id": "12_0"})()]]

    def flaky(fn: object, items: list) -> list:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    monkeypatch.setattr(ex._executor, "map_array", flaky)
    from autosci_hpc.execution.trial import TrialRequest

    request = TrialRequest(trial_id=1, folder=str(tmp_path), snapshot_dir=str(tmp_path), command="true",
                           overrides={}, seed=0, time_limit_s=5, metric="m", test_metric="t")
    jobs = ex.submit([request])
    assert [j.job_id for j in jobs] == ["12_0"] and ex.submit_calls == 2

    def refuse(fn: object, items: list) -> list:
        raise RuntimeError("sbatch: error: AssocMaxSubmitJobLimit")

    monkeypatch.setattr(ex._executor, "map_array", refuse)
    with pytest.raises(SubmissionError, match="AssocMaxSubmitJobLimit"):
        ex.submit([request])
    assert ex.submit_calls == 3  # no retry of a policy error
