"""Trial code against the campaign: what it can read, write and see, with and without the sandbox.

Each trial runs in its own Python process started with the API key in its environment (as submitit's
worker inherits the coordinator's), next to a campaign folder holding a database with held-out scores,
another trial's result, a snapshot, held-out labels and a key file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from autosci_hpc.execution.gpus import Placement
from autosci_hpc.execution.sandbox import SandboxSettings
from autosci_hpc.execution.trial import TrialRequest
from autosci_hpc.llm.workspace import Workspace
from autosci_hpc.config import LLMSection
from autosci_hpc.state import Store
from autosci_hpc.state.models import Campaign, Trial
from autosci_hpc.task import TaskSpec, load_task

from hostile import KEY, hostile_task, needs_sandbox, probe_of, run_in_runner, sealed_request

HELDOUT = 0.7316402


def campaign(tmp_path: Path) -> tuple[Path, dict]:
    """A campaign folder with everything trial code must not reach; the attack's targets."""
    folder = tmp_path / "campaign"
    store = Store(folder)
    with store.write() as session:
        session.add(Campaign(name="c", folder=str(folder), task_name="toy", mode="decentralized"))
        session.add(Trial(role="baseline", group="baseline", snapshot_id="s0", config_signature="s0|",
                          seed=0, status="succeeded", metric=0.7, test_metric=HELDOUT))
    other = folder / "trials" / "000001"
    other.mkdir(parents=True)
    (other / "result.json").write_text(json.dumps({"trial_id": 1, "test_metric": HELDOUT}))
    snapshot = folder / "snapshots" / "s0"
    snapshot.mkdir(parents=True)
    (snapshot / "train.py").write_text("print('champion')\n")
    heldout = folder / "data" / "sealed" / "labels.csv"
    heldout.parent.mkdir(parents=True)
    heldout.write_text(f"label\n{HELDOUT}\n")
    visible = folder / "data" / "visible"
    visible.mkdir()
    (visible / "train.csv").write_text("x,y\n1,2\n")
    secrets = tmp_path / "home" / ".config" / "autosci"
    secrets.mkdir(parents=True)
    key_file = secrets / "key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    targets = {
        "read": {"state.db": str(folder / "state.db"), "other_trial": str(other / "result.json"),
                 "snapshot": str(snapshot / "train.py"), "heldout_labels": str(heldout),
                 "key_file": str(key_file), "visible_data": str(visible / "train.csv")},
        "write": {"snapshot": str(snapshot / "train.py"), "other_trial": str(other / "result.json")},
        "db": str(folder / "state.db"),
        "other_results": [str(other / "result.json")],
    }
    return folder, targets


def trial_request(task: TaskSpec, trial: Path, mode: str, **fields: object) -> TrialRequest:
    return sealed_request(task, trial.parent.parent, trial, mode, **fields)


def run(tmp_path: Path, mode: str, extra: str = "") -> tuple[Path, dict, str]:
    folder, targets = campaign(tmp_path)
    task = load_task(hostile_task(tmp_path, targets, extra))
    trial = folder / "trials" / "000002"
    request = trial_request(task, trial, mode, data_dir=str(folder / "data" / "visible"))
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY}
    done = run_in_runner(request.model_dump_json(), env)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (trial / "trial.log").read_text()
    return trial, probe_of(trial), log


def result_of(trial: Path) -> dict:
    return json.loads((trial / "result.json").read_text())["result"]


def test_the_trial_still_runs_and_reads_its_visible_data(tmp_path: Path, mode: str) -> None:
    """The sandbox does not just break everything: the program runs, and reads its data where
    AUTOSCI_DATA says."""
    extra = ("import os as _o2\nwith open(_o2.path.join(_o2.environ['AUTOSCI_DATA'], 'train.csv')) as _f2:\n"
             "    print('visible rows:', len(_f2.read().splitlines()))\n")
    trial, _, log = run(tmp_path, mode, extra)
    assert "visible rows: 2" in log
    assert result_of(trial)["status"] == "succeeded"


@pytest.mark.parametrize("target", ["state.db", "other_trial", "snapshot", "heldout_labels", "key_file"])
def test_trial_code_cannot_read(tmp_path: Path, mode: str, target: str,
                                request: pytest.FixtureRequest) -> None:
    needs_sandbox(request, mode, f"without one, trial code reads {target} with the user's rights")
    _, probe, _ = run(tmp_path, mode)
    assert probe["read"][target] is False


@pytest.mark.parametrize("target", ["snapshot", "other_trial"])
def test_trial_code_cannot_write_outside_its_folder(tmp_path: Path, mode: str, target: str,
                                                    request: pytest.FixtureRequest) -> None:
    needs_sandbox(request, mode, f"without one, trial code can modify the {target}")
    _, probe, _ = run(tmp_path, mode)
    assert probe["wrote"][target] is False


def test_trial_code_sees_no_other_process(tmp_path: Path, mode: str, request: pytest.FixtureRequest) -> None:
    """Its own PID namespace: no /proc/<parent>/environ to read the key from."""
    needs_sandbox(request, mode, "without one, /proc shows every process of the user, environments included")
    _, probe, log = run(tmp_path, mode)
    # It sees itself and the sandbox's own init (whose environment is the sandbox's), nothing else.
    assert probe["proc"]["pids_seen"] <= 2 and probe["stolen_key"] == ""
    assert KEY not in log


def test_trial_code_cannot_post_to_the_forum(tmp_path: Path, mode: str,
                                             request: pytest.FixtureRequest) -> None:
    needs_sandbox(request, mode, "without one, trial code opens state.db and inserts a forum post")
    folder_trial, probe, _ = run(tmp_path, mode)
    assert probe["forum_insert"] is False and probe["stolen_heldout"] == []


def test_the_environment_holds_no_key_and_no_trial_identity(tmp_path: Path, mode: str,
                                                            request: pytest.FixtureRequest) -> None:
    needs_sandbox(request, mode,
                  "without one, the trial's environment is the runner's, less the key variables")
    extra = "import os as _o3\nprint('ENV', sorted(_o3.environ))\n"
    _, _, log = run(tmp_path, mode, extra)
    names = log.split("ENV ", 1)[1].splitlines()[0]
    assert "AUTOSCI_TRIAL_ID" not in names and "SLURM" not in names and "PYTEST" not in names


def test_no_network_in_the_sandbox(tmp_path: Path, mode: str, request: pytest.FixtureRequest) -> None:
    needs_sandbox(request, mode, "without one, trial code has the host's network")
    extra = ("import socket as _s4\n_ifs = [n for _, n in _s4.if_nameindex()]\nprint('IFS', _ifs)\n")
    _, _, log = run(tmp_path, mode, extra)
    interfaces = log.split("IFS ", 1)[1].splitlines()[0]
    assert interfaces in ("['lo']", "[]"), interfaces


def test_a_timeout_kills_the_sandboxed_program(tmp_path: Path, mode: str) -> None:
    """The trial's time limit still takes the whole sandbox down (grandchildren included)."""
    folder, targets = campaign(tmp_path)
    task = load_task(hostile_task(tmp_path, targets))
    trial = folder / "trials" / "000003"
    request = trial_request(task, trial, mode, overrides={"behaviour": "hang"}, time_limit_s=3)
    done = run_in_runner(request.model_dump_json(), dict(os.environ))
    result = result_of(trial)
    assert result["failure_class"] == "timeout", (result, done.stderr[-1000:])
    marker = str(task.program_dir)
    leftovers = [p for p in Path("/proc").glob("[0-9]*/cmdline") if marker.encode() in _read(p)
                 or (b"train.py" in _read(p) and str(trial).encode() in _read(p))]
    assert not leftovers


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_the_smoke_run_cannot_be_told_apart_from_a_trial(tmp_path: Path, mode: str,
                                                         request: pytest.FixtureRequest) -> None:
    """The program prints what it could tell a smoke run by (environment, paths, folder, host) and stops;
    the same program as a trial prints the same. A program that behaves well only when it is watched
    cannot choose when."""
    needs_sandbox(request, mode,
                  "without one, the smoke run's paths (a scratch folder) differ from a trial's")
    extra = ("import os as _o5, socket as _s5, sys as _y5\n"
             "print('FINGERPRINT', sorted((k, v) for k, v in _o5.environ.items() if k != 'PYTHONPATH'), "
             "_o5.getcwd(), sorted(_o5.listdir('..')), _s5.gethostname(), _y5.argv[1:], _o5.getpid())\n"
             "raise SystemExit(7)\n")
    folder, targets = campaign(tmp_path)
    task = load_task(hostile_task(tmp_path, targets, extra))
    trial = folder / "trials" / "000004"
    # placed as the local executor places a CPU trial (no GPU shown), as the smoke run is placed too
    req = trial_request(task, trial, mode, placement=Placement(executor="local", devices=""))
    run_in_runner(req.model_dump_json(), dict(os.environ))
    as_trial = (trial / "trial.log").read_text().split("FINGERPRINT ", 1)[1].splitlines()[0]
    ws = Workspace.create(task, task.program_dir, folder / "scratch", sandbox=SandboxSettings(mode=mode))
    try:
        ok, report = ws.smoke(LLMSection(smoke_timeout_s=60))
    finally:
        ws.close()
    assert not ok
    as_smoke = report.split("FINGERPRINT ", 1)[1].splitlines()[0]
    # Only the trial's own folder listing may differ by the files a trial leaves (none before it ends).
    assert as_smoke == as_trial


def test_trial_code_cannot_swap_its_log_for_a_link_to_a_host_file(tmp_path: Path, mode: str,
                                                                   request: pytest.FixtureRequest) -> None:
    """The harness reads the log after the step, outside the sandbox: a link planted there would make it
    read the key file on the program's behalf, into the log tail and result.json."""
    needs_sandbox(request, mode, "without one, the program replaces trial.log by a link the harness follows")
    folder, targets = campaign(tmp_path)
    extra = ("import os as _o7\n"
             "for _p in ('../trial.log', '/sandbox/trial/trial.log'):\n"
             "    try:\n        _o7.remove(_p); _o7.symlink(%r, _p); print('swapped', _p)\n"
             "    except OSError as _e:\n        print('refused', _p, _e)\n") % targets["read"]["key_file"]
    task = load_task(hostile_task(tmp_path, targets, extra))
    trial = folder / "trials" / "000005"
    run_in_runner(trial_request(task, trial, mode).model_dump_json(), dict(os.environ))
    assert KEY not in (trial / "result.json").read_text()
    assert not (trial / "trial.log").is_symlink()


def test_the_harness_reads_no_link_the_step_planted(tmp_path: Path) -> None:
    from autosci_hpc.execution.sandbox import read_no_link

    secret = tmp_path / "secret"
    secret.write_text(KEY)
    folder = tmp_path / "trial"
    (folder / "work").mkdir(parents=True)
    (folder / "metrics.json").symlink_to(secret)
    (folder / "out").symlink_to(tmp_path)
    (folder / "work" / "ok.json").write_text("{}")
    assert read_no_link(folder / "work" / "ok.json", folder) == b"{}"
    for planted in (folder / "metrics.json", folder / "out" / "secret"):
        with pytest.raises(OSError):
            read_no_link(planted, folder)
