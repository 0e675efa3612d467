"""Trials on several nodes, without a cluster: the configuration that asks for them, the SLURM request,
the rank arithmetic of a later node, the rendezvous file (written atomically, read defensively), and a
later node's part of the trial. The same on the real two-node test cluster: tests/slurm/test_gpu_trials.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autosci_hpc import files
from autosci_hpc.config import ConfigError, load_config
from autosci_hpc.execution import nodes, ranks
from autosci_hpc.execution import trial as trial_module
from autosci_hpc.execution.gpus import Placement, with_task_gpus
from autosci_hpc.execution.registry import make_executor
from autosci_hpc.execution.results import RESULT_FILE
from autosci_hpc.execution.sandbox import SandboxSettings, probe
from autosci_hpc.execution.trial import (FailureClass, TrialRequest, _run_step, join_trial,
                                         sandboxed, training_step)
from autosci_hpc.state import conditions as stored_conditions
from autosci_hpc.task import TaskError, load_task

from helpers import FIXTURE_TASKS

JOB = {"SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "0"}


# ---- the rank arithmetic ---------------------------------------------------------------------------------


def test_the_ranks_of_a_later_node_continue_the_numbering_of_the_earlier_ones() -> None:
    env = ranks.rank_env({}, 1, 2, 5000, node=2, nodes=3, master="node-a")
    assert env == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "6", "LOCAL_WORLD_SIZE": "2",
                   "GROUP_RANK": "2", "NODE_RANK": "2", "MASTER_ADDR": "node-a", "MASTER_PORT": "5000"}
    # one node, as before: ranks meet on the loopback
    assert ranks.rank_env({}, 1, 2, 5000) == {**env, "RANK": "1", "WORLD_SIZE": "2", "GROUP_RANK": "0",
                                              "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1"}


def test_ranks_py_launches_a_later_nodes_ranks_with_their_global_ranks(tmp_path: Path) -> None:
    # one write per rank, so that two ranks' lines never interleave
    show = ("import json, os; os.write(1, (json.dumps({k: os.environ[k] for k in ('RANK', 'LOCAL_RANK', "
            "'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'MASTER_ADDR', 'MASTER_PORT')})\n"
            "+ '\\n').encode())")
    out = subprocess.run([sys.executable, ranks.__file__, "2", "--node", "1", "--nodes", "2", "--master",
                          "head-node:29500", "--", sys.executable, "-c", show],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = sorted((json.loads(line) for line in out.stdout.splitlines()), key=lambda r: r["RANK"])
    assert [(r["RANK"], r["LOCAL_RANK"]) for r in seen] == [("2", "0"), ("3", "1")]
    assert {(r["WORLD_SIZE"], r["LOCAL_WORLD_SIZE"], r["GROUP_RANK"], r["MASTER_ADDR"], r["MASTER_PORT"])
            for r in seen} == {("4", "2", "1", "head-node", "29500")}


@pytest.mark.parametrize("argv", [["2", "--node", "2", "--nodes", "2", "--master", "h:1", "--", "x"],
                                  ["2", "--nodes", "2", "--", "x"], ["2", "--node", "one", "--", "x"]])
def test_ranks_py_refuses_a_node_it_cannot_place(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, ranks.__file__, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("ranks.py: ")


# ---- configuration ---------------------------------------------------------------------------------------


def test_gpus_that_are_not_a_multiple_of_the_nodes_are_refused_in_one_line_naming_the_key(
        tmp_path: Path) -> None:
    task = tmp_path / "ranks"
    shutil.copytree(FIXTURE_TASKS / "ranks", task)
    spec = (task / "task.yaml").read_text()
    (task / "task.yaml").write_text(spec.replace("gpus: 1", "gpus: 3\nnodes: 2"))
    with pytest.raises(TaskError) as err:
        load_task(task)
    assert "\n" not in str(err.value) and "'nodes'" in str(err.value) and "multiple of 2" in str(err.value)
    (task / "task.yaml").write_text(spec.replace("gpus: 1", "gpus: 4\nnodes: 2"))
    assert (load_task(task).gpus, load_task(task).nodes) == (4, 2)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["task.gpus=3", "task.nodes=2"])
    assert "\n" not in str(err.value) and "'task.nodes'" in str(err.value) and "not 3" in str(err.value)
    # the campaign's gpus with the task's nodes: refused where they meet, when the campaign starts
    with pytest.raises(ConfigError, match=r"^task.nodes: a trial on 2 nodes needs gpus") as err:
        with_task_gpus(load_config(None, ["executor.kind=slurm", "task.gpus=3"]), 4, 2)
    assert "\n" not in str(err.value)


def test_the_local_executor_refuses_a_trial_on_several_nodes_in_one_line() -> None:
    config = load_config(None, ["task.gpus=2", "task.nodes=2"])
    with pytest.raises(ConfigError) as err:
        with_task_gpus(config, 0)
    assert str(err.value).startswith("task.nodes: the task's trials span 2 nodes each, but "
                                     "executor.kind=local")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="executor.kind=local runs on this one machine"):
        make_executor(config, Path("unused"), 60)
    on_slurm = with_task_gpus(load_config(None, ["executor.kind=slurm"]), 2, 2)
    assert (on_slurm.task.gpus, on_slurm.task.nodes) == (2, 2)


def test_slurm_asks_for_one_task_per_node_each_with_its_share_of_the_gpus(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fake_slurm import FakeSlurm
    from autosci_hpc.execution import conditions
    from autosci_hpc.execution.slurm import SlurmTrialExecutor

    monkeypatch.setenv("PATH", FakeSlurm(tmp_path / "fake-slurm").path_env())
    cfg = load_config(None, ["executor.kind=slurm"]).executor.slurm
    several = SlurmTrialExecutor.from_config(tmp_path / "a", cfg, job_name="j", time_limit_s=60,
                                             gpus_per_trial=4, nodes=2)
    assert (several.parameters["nodes"], several.parameters["tasks_per_node"]) == (2, 1)
    assert several.parameters["slurm_srun_args"] == ["--kill-on-bad-exit=1"]
    assert several.parameters["slurm_gres"] == "gpu:2"  # per node
    # charged with all four GPUs; ranks counts the processes of all its nodes
    assert several.placement == Placement(executor="slurm", gpus=4.0, ranks=4, nodes=2)
    record = stored_conditions.clean(conditions.observe(several.placement))
    assert (record["nodes"], record["ranks"], record["gpus"]) == (2, 4, 4.0)
    named = stored_conditions.describe({**record, "host": "n1", "gpu": ["H100", "H100"]})
    assert named == "host n1 (the first of 2 nodes), GPU H100,H100, alone on it"
    one = SlurmTrialExecutor.from_config(tmp_path / "b", cfg, job_name="j", time_limit_s=60, gpus_per_trial=2)
    assert "nodes" not in one.parameters and "slurm_srun_args" not in one.parameters
    assert one.parameters["slurm_gres"] == "gpu:2"
    assert one.placement == Placement(executor="slurm", gpus=2.0, ranks=2)


# ---- the rendezvous file ---------------------------------------------------------------------------------


def rendezvous(**changes: Any) -> nodes.Rendezvous:
    return nodes.Rendezvous(**{"host": "node-a", "port": 29500, "job": "77.0", "trial_id": 5, "attempt": 0,
                               **changes})


def test_the_rendezvous_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / nodes.RENDEZVOUS_FILE
    path.write_text("an earlier run's")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError):
        nodes.write_rendezvous(tmp_path, rendezvous())
    # never written in place: the old file is whole, no temp file is left
    assert path.read_text() == "an earlier run's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    monkeypatch.undo()
    nodes.write_rendezvous(tmp_path, rendezvous())
    assert nodes.read_rendezvous(tmp_path, "77.0", 5, 0) == (rendezvous(), "")


GOOD = rendezvous().model_dump_json()


@pytest.mark.parametrize("content,why", [
    (GOOD[: len(GOOD) // 2], "not a rendezvous record"),  # truncated
    ("\xff\xfe garbage", "not a rendezvous record"),
    ("[1, 2]", "not a rendezvous record"),
    (json.dumps({"host": "node-a", "port": "many"}), "not a rendezvous record"),
    ("x" * (nodes.MAX_BYTES + 10), f"over {nodes.MAX_BYTES} bytes"),
    (rendezvous(job="76.0").model_dump_json(), "another run's"),
    (rendezvous(attempt=1).model_dump_json(), "another run's"),
    (rendezvous(host="node-a; rm -rf /").model_dump_json(), "no usable host"),
    (rendezvous(port=0).model_dump_json(), "no usable host"),
    (None, "no rendezvous.json yet"),
])
def test_a_garbled_truncated_or_foreign_rendezvous_is_waited_past(tmp_path: Path, content: Any,
                                                                  why: str) -> None:
    if content is not None:
        (tmp_path / nodes.RENDEZVOUS_FILE).write_bytes(content.encode("utf-8", "surrogateescape"))
    found, reason = nodes.read_rendezvous(tmp_path, "77.0", 5, 0)
    assert found is None and why in reason


def test_a_rendezvous_planted_as_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(GOOD)
    (tmp_path / "trial").mkdir()
    (tmp_path / "trial" / nodes.RENDEZVOUS_FILE).symlink_to(elsewhere)
    found, reason = nodes.read_rendezvous(tmp_path / "trial", "77.0", 5, 0)
    assert found is None and "unreadable" in reason


def test_node_rank_and_job_run_come_from_slurm() -> None:
    assert nodes.node_rank({"SLURM_PROCID": "1", "SLURM_NODEID": "0"}) == 1
    assert nodes.node_rank({"SLURM_NODEID": "3"}) == 3 and nodes.node_rank({}) == 0
    assert nodes.node_rank({"SLURM_PROCID": "-1"}) == 0
    assert nodes.job_run({"SLURM_JOB_ID": "9", "SLURM_RESTART_COUNT": "2"}) == "9.2"


# ---- a later node's part ---------------------------------------------------------------------------------


def node_request(tmp_path: Path, sandbox: str = "none", time_limit_s: float = 30) -> TrialRequest:
    """A trial on two nodes of two GPUs each whose program prints what its ranks were given, with its working
    copy in place (as the first node leaves it before writing the rendezvous)."""
    program = tmp_path / "program"
    program.mkdir()
    (program / "show.py").write_text(
        "import json, os, socket\n"
        "keys = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK', 'MASTER_ADDR',\n"
        "        'MASTER_PORT')\n"
        "line = json.dumps({**{k: os.environ[k] for k in keys}, 'host': socket.gethostname(),\n"
        "                   'interfaces': len(socket.if_nameindex())})\n"
        "os.write(1, (line + '\\n').encode())  # one write per rank: two ranks' lines never interleave\n")
    folder = tmp_path / "trial"
    shutil.copytree(program, folder / "work")
    return TrialRequest(trial_id=5, folder=str(folder), snapshot_dir=str(program), command="{python} show.py",
                        overrides={}, seed=0, time_limit_s=time_limit_s, metric="m", test_metric="t",
                        sandbox=SandboxSettings(mode=sandbox),
                        placement=Placement(executor="slurm", gpus=4.0, ranks=4, nodes=2))


@pytest.mark.parametrize("sandbox", ["none", "bwrap"])
def test_a_later_node_runs_its_ranks_where_the_first_nodes_rendezvous_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: str) -> None:
    if sandbox == "bwrap" and not probe("bwrap")[0]:
        pytest.skip(f"bubblewrap does not work here: {probe('bwrap')[1]}")
    for name, value in {**JOB, "SLURM_PROCID": "1"}.items():
        monkeypatch.setenv(name, value)
    request = node_request(tmp_path, sandbox)
    nodes.write_rendezvous(Path(request.folder), rendezvous(host=socket.gethostname()))
    out = trial_module.run_trial(request)  # node 1 of 2: its part only
    assert out["node"] == 1 and out["returncode"] == 0
    folder = Path(request.folder)
    lines = (folder / "node-1.log").read_text().splitlines()
    seen = sorted((json.loads(line) for line in lines), key=lambda r: r["RANK"])
    assert [(r["RANK"], r["LOCAL_RANK"]) for r in seen] == [("2", "0"), ("3", "1")]
    assert {(r["WORLD_SIZE"], r["LOCAL_WORLD_SIZE"], r["GROUP_RANK"], r["MASTER_ADDR"], r["MASTER_PORT"])
            for r in seen} == {("4", "2", "1", socket.gethostname(), "29500")}
    # the node's own network and name, which its ranks meet the first node's over
    assert all(r["host"] == socket.gethostname() for r in seen)
    assert all(r["interfaces"] == len(socket.if_nameindex()) for r in seen)
    # no result, no evaluator, nothing in the first node's log (a sandbox makes the protected files empty)
    assert not (folder / RESULT_FILE).exists() and not (folder / "evaluation").exists()
    assert not (folder / "trial.log").exists() or not (folder / "trial.log").read_text()
    assert not list(folder.glob("node-*.failed"))


def test_a_node_whose_rendezvous_never_comes_fails_the_trial_with_a_clear_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**JOB, "SLURM_PROCID": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(trial_module, "RENDEZVOUS_POLL_S", 0.05)
    request = node_request(tmp_path, time_limit_s=0.5)
    folder = Path(request.folder)
    (folder / nodes.RENDEZVOUS_FILE).write_text(GOOD[:20])  # garbled: waited past, never crashed on
    out = trial_module.run_trial(request)  # ends without an error: srun must not stop the first node
    assert out["failed"] == ("no rendezvous from the first node within 0.5 s (rendezvous.json is not a "
                             "rendezvous record)")
    # the first node learns it from the note it watches while its ranks wait
    assert nodes.failed_node(folder, "77.0").startswith("node 1 of the trial: no rendezvous")
    assert nodes.failed_node(folder, "78.0") == ""  # another run's note
    assert not (folder / RESULT_FILE).exists()


def test_a_waiting_node_stops_when_the_first_node_writes_the_result(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**JOB, "SLURM_PROCID": "1"}.items():
        monkeypatch.setenv(name, value)
    request = node_request(tmp_path, time_limit_s=600)
    folder = Path(request.folder)
    (folder / RESULT_FILE).write_text("an earlier result: not the first node's of this run")
    waits: list[float] = []

    def first_node_fails_early(seconds: float) -> None:  # the first node's trial fails before its step
        waits.append(seconds)
        files.atomic_write_text(folder / RESULT_FILE, "{}")

    monkeypatch.setattr(trial_module.time, "sleep", first_node_fails_early)
    out = join_trial(request, 1)
    assert waits == [trial_module.RENDEZVOUS_POLL_S] and out["returncode"] is None
    assert not (folder / "node-1.log").exists() and not list(folder.glob("node-*.failed"))


def test_the_first_nodes_step_stops_when_another_node_fails(tmp_path: Path) -> None:
    nodes.fail_note(tmp_path, 1, "77.0", "its ranks exited with status 1: CUDA error")
    with open(tmp_path / "log", "wb") as log:
        code, failure, reason = _run_step([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path,
                                          dict(os.environ), 60, log,
                                          stop=lambda: nodes.failed_node(tmp_path, "77.0"))
    assert failure is FailureClass.PROGRAM_ERROR and code is not None and code < 0
    assert reason == "node 1 of the trial: its ranks exited with status 1: CUDA error"


def test_one_node_keeps_its_ranks_on_the_loopback_of_one_sandbox_without_a_network(tmp_path: Path) -> None:
    if not probe("bwrap")[0]:
        pytest.skip(f"bubblewrap does not work here: {probe('bwrap')[1]}")
    request = node_request(tmp_path, "bwrap")
    one = request.model_copy(update={"placement": Placement(executor="slurm", gpus=2.0, ranks=2)})
    argv, _ = sandboxed(one, "train", *training_step(one))
    assert "--share-net" not in argv and argv[argv.index("--hostname") + 1] == "trial"
    assert argv[argv.index("--") + 3:argv.index("--") + 5] == ["2", "--"]  # ranks.py 2 -- (no --master)
    several, _ = sandboxed(request, "train", *training_step(request, rendezvous(), 0))
    assert "--share-net" in several and several[several.index("--hostname") + 1] == socket.gethostname()
    tail = several[several.index("--") + 3:]
    assert tail[:8] == ["2", "--node", "0", "--nodes", "2", "--master", "node-a:29500", "--"]
    evaluator, _ = sandboxed(request, "evaluate", *trial_module.evaluation_step(request))
    assert "--share-net" not in evaluator
