"""The node side: a trial's program runs, fails in every way a program can, and reports atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from autosci_hpc.execution.results import (MAX_RESULT_BYTES, RESULT_FILE, ResultFileError, read_result,
                                           write_result)
from autosci_hpc.execution.trial import TrialFailed, run_trial, task_request
from autosci_hpc.task import load_task

TOY = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "toy"


def request(tmp_path: Path, trial_id: int = 1, time_limit_s: float = 20, **overrides: object) -> TrialRequest:
    task = load_task(TOY)
    return task_request(task, tmp_path / "campaign", trial_id=trial_id, folder=tmp_path / f"t{trial_id}",
                        snapshot_dir=task.program_dir, overrides=dict(overrides), seed=0, time_limit_s=time_limit_s)


def test_a_good_program_reports_its_metrics(tmp_path: Path) -> None:
    req = request(tmp_path, x=0.6, y=-0.3)
    out = run_trial(req)
    result = read_result(Path(req.folder), 1)
    assert result is not None and result.status == "succeeded"
    assert out["metric"] == result.metric and result.metric == pytest.approx(1.0, abs=0.02)
    assert result.test_metric == pytest.approx(1.0)
    assert result.environment["python"] and "packages" in result.environment
    assert not list(Path(req.folder).glob(".*.tmp"))  # the temp file was renamed away


@pytest.mark.parametrize("behaviour,failure,needle", [
    ("crash", "program_error", "exited with status"),
    ("malformed", "bad_metrics", "could not score the artifacts"),
    ("glued", "bad_metrics", "Extra data"),
    ("nometric", "bad_metrics", "'x' is not a finite number"),
    ("nan", "bad_metrics", "'x' is not a finite number"),
])
def test_a_failing_program_becomes_a_failed_result(tmp_path: Path, behaviour: str, failure: str, needle: str) -> None:
    req = request(tmp_path, behaviour=behaviour)
    with pytest.raises(TrialFailed):  # the job exits non-zero, so the scheduler's state is honest too
        run_trial(req)
    result = read_result(Path(req.folder), 1)
    assert result is not None and result.status == "failed"
    assert result.failure_class == failure and needle in result.failure_reason
    if behaviour == "crash":
        assert "Traceback" in result.log_tail


def test_a_hanging_program_is_killed_at_its_limit(tmp_path: Path) -> None:
    req = request(tmp_path, time_limit_s=1.5, behaviour="hang")
    start = time.monotonic()
    with pytest.raises(TrialFailed):
        run_trial(req)
    assert time.monotonic() - start < 10
    result = read_result(Path(req.folder), 1)
    assert result is not None and result.failure_class == "timeout"


def test_result_files_that_are_not_one_valid_record_are_rejected(tmp_path: Path) -> None:
    req = request(tmp_path, x=0.1)
    run_trial(req)
    folder = Path(req.folder)
    good = (folder / RESULT_FILE).read_text()
    assert read_result(folder, 1) is not None
    with pytest.raises(ResultFileError, match="written for trial 1"):
        read_result(folder, 2)
    for bad, needle in [(good[: len(good) // 2], "complete JSON"), (good + good, "complete JSON"),
                        ("", "empty"), (good.replace('"status": "succeeded"', '"status": "failed"'), "checksum")]:
        (folder / RESULT_FILE).write_text(bad)
        with pytest.raises(ResultFileError, match=needle):
            read_result(folder, 1)
    # A file far beyond any record the runner writes is refused without being read whole.
    with (folder / RESULT_FILE).open("w") as handle:
        handle.write(good[:-1] + " " * MAX_RESULT_BYTES + "}")
    with pytest.raises(ResultFileError, match="larger than 8 MiB"):
        read_result(folder, 1)
    (folder / RESULT_FILE).unlink()
    assert read_result(folder, 1) is None  # absent is not invalid: the job may still be running


def test_write_result_is_atomic_replace(tmp_path: Path) -> None:
    req = request(tmp_path, x=0.2)
    run_trial(req)
    folder = Path(req.folder)
    first = read_result(folder, 1)
    assert first is not None
    write_result(folder, first.model_copy(update={"metric": 0.5}))
    again = read_result(folder, 1)
    assert again is not None and again.metric == 0.5
    assert json.loads((folder / RESULT_FILE).read_text())["sha256"]


def test_the_program_never_sees_api_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-in-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-secret")
    show = "{python} -c \"import os; print(sorted(k for k in os.environ if 'API_KEY' in k))\""
    req = request(tmp_path, trial_id=9).model_copy(update={"command": show, "evaluate": show})
    with pytest.raises(TrialFailed):  # nothing writes metrics; what matters is what each step printed
        run_trial(req)
    assert "[]" in (Path(req.folder) / "evaluate.log").read_text()
    log = (Path(req.folder) / "trial.log").read_text()
    assert "[]" in log and "sk-" not in log


def test_a_trial_whose_controller_is_gone_stops_and_writes_no_result(tmp_path: Path) -> None:
    """A job cancelled while its controller was starting it leaves the trial orphaned (the controller
    never recorded the task it had just started). The trial notices that its parent is gone, stops its
    step and writes no result, instead of running on unseen and reporting later as a timeout."""
    import signal
    import subprocess
    import sys

    req = request(tmp_path, time_limit_s=600, behaviour="hang")
    child = ("import sys; from autosci_hpc.execution.trial import TrialRequest, run_trial; "
             "run_trial(TrialRequest.model_validate_json(sys.argv[1]))")
    parent = ("import subprocess, sys, time; "
              "p = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]]); "
              "print(p.pid, flush=True); time.sleep(600)")
    controller = subprocess.Popen([sys.executable, "-c", parent, child, req.model_dump_json()],
                                  stdout=subprocess.PIPE, text=True)
    assert controller.stdout is not None
    trial_pid = int(controller.stdout.readline())
    log = Path(req.folder) / "trial.log"
    deadline = time.monotonic() + 120
    while not log.exists() and time.monotonic() < deadline:  # the training step has started
        time.sleep(0.05)
    assert log.exists()
    controller.send_signal(signal.SIGKILL)
    controller.wait()

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.monotonic() + 60
    while running(trial_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(trial_pid), "the orphaned trial ran on"
    assert not (Path(req.folder) / RESULT_FILE).exists()
