"""Hostile programs: what a trial's code may try against the score, and what the harness does about it.

Each case is the toy task with a few lines appended to its training step, run through the real trial
runner in the layout of a real campaign (snapshots, frozen evaluator, prepared data under one folder).
The sandbox cases (reading what a trial should not see) belong to the isolation tests.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from pathlib import Path

import pytest

from autosci_hpc.data import prepare_data
from autosci_hpc.execution.results import TrialResult, read_result
from autosci_hpc.procs import pid_alive
from autosci_hpc.execution.trial import HARNESS_KEY, TrialFailed, run_trial, task_request
from autosci_hpc.task import TaskError, TaskSpec, build_snapshot, load_task

TOY = Path(__file__).resolve().parents[1] / "fixtures" / "tasks" / "toy"
#: The toy evaluator's value for the champion (x = y = 0) on seed 0: 1 - 0.36 - 0.09 + 0.01 * u(0).
HONEST = 0.55 + 0.01 * __import__("random").Random(0).uniform(-1.0, 1.0)

PREPARE = '''\
import argparse, pathlib
p = argparse.ArgumentParser(); p.add_argument("--out"); out = pathlib.Path(p.parse_args().out)
(out / "visible").mkdir(parents=True); (out / "sealed").mkdir()
(out / "visible" / "train.txt").write_text("0.6 -0.3\\n")
(out / "sealed" / "labels.txt").write_text("the validation labels\\n")
'''


def hostile_task(tmp_path: Path, code: str, with_data: bool = False) -> TaskSpec:
    """The toy task, copied, with `code` run at the end of its training step (`args` in scope)."""
    folder = tmp_path / "task"
    shutil.copytree(TOY, folder, ignore=shutil.ignore_patterns("__pycache__"))
    train = folder / "program" / "train.py"
    text = train.read_text()
    marker = "    if behaviour == \"ok\":\n        print(f\"score"
    assert marker in text
    train.write_text(text.replace(marker, textwrap.indent(textwrap.dedent(code), "    ") + marker))
    if with_data:
        (folder / "prepare.py").write_text(PREPARE)
        spec = (folder / "task.yaml").read_text()
        (folder / "task.yaml").write_text(spec + 'prepare: "{python} prepare.py --out {data}"\n')
    return load_task(folder)


def run(task: TaskSpec, tmp_path: Path, time_limit_s: float = 20) -> tuple[TrialResult, Path]:
    """One trial in a campaign's layout: <campaign>/trials/000001, snapshots/, evaluator/, data/."""
    campaign = tmp_path / "campaign"
    prepare_data(task, campaign)
    snapshot = build_snapshot(task, campaign)
    folder = campaign / "trials" / "000001"
    request = task_request(task, campaign, trial_id=1, folder=folder, snapshot_dir=campaign / "snapshots" / snapshot,
                           overrides={}, seed=0, time_limit_s=time_limit_s)
    try:
        run_trial(request)
    except TrialFailed:
        pass
    result = read_result(folder, 1)
    assert result is not None
    return result, campaign


def test_an_honest_program_scores_what_the_evaluator_measures(tmp_path: Path) -> None:
    result, _ = run(hostile_task(tmp_path, ""), tmp_path)
    assert result.status == "succeeded" and result.metric == pytest.approx(HONEST)
    assert result.metrics[HARNESS_KEY] == {"reported": {"score": pytest.approx(HONEST)}, "flags": []}


def test_a_fake_metrics_file_is_kept_as_reported_and_ignored(tmp_path: Path) -> None:
    # It claims a perfect score in its own metrics file, and plants one where the evaluator's goes.
    task = hostile_task(tmp_path, """
        json.dump({"score": 0.99, "test_score": 0.99}, open(args.metrics, "w"))
        json.dump({"score": 0.99, "test_score": 0.99}, open("../metrics.json", "w"))
        return 0
    """)
    result, _ = run(task, tmp_path)
    assert result.status == "succeeded"
    assert result.metric == pytest.approx(HONEST) and result.test_metric == pytest.approx(0.55)
    harness = result.metrics[HARNESS_KEY]
    assert harness["reported"] == {"score": 0.99, "test_score": 0.99}
    assert any("reported score=0.99" in flag for flag in harness["flags"])
    assert any("reported test_score=0.99" in flag for flag in harness["flags"])


def test_a_program_that_overwrites_the_evaluator_fails_on_integrity(tmp_path: Path) -> None:
    task = hostile_task(tmp_path, """
        evaluator = os.path.join("..", "..", "..", "evaluator", "evaluate.py")
        with open(evaluator, "w") as f:
            f.write("import json, sys\\njson.dump({'score': 9.0, 'test_score': 9.0}, open(sys.argv[-1], 'w'))\\n")
    """)
    result, campaign = run(task, tmp_path)
    assert result.status == "failed" and result.failure_class == "integrity"
    assert "evaluator/evaluate.py" in result.failure_reason and "was not run" in result.failure_reason
    assert result.metric is None
    assert not (campaign / "trials" / "000001" / "metrics.json").exists()


def test_a_program_that_monkeypatches_the_evaluator_fails_on_integrity(tmp_path: Path) -> None:
    # A module next to the evaluator's script shadows the standard library's `random` in it.
    task = hostile_task(tmp_path, """
        planted = os.path.join("..", "..", "..", "evaluator", "random.py")
        with open(planted, "w") as f:
            f.write("class Random:\\n    def __init__(self, *a): pass\\n    def uniform(self, a, b): return 50.0\\n")
    """)
    result, campaign = run(task, tmp_path)
    assert result.status == "failed" and result.failure_class == "integrity"
    assert "added evaluator/random.py" in result.failure_reason
    assert not (campaign / "trials" / "000001" / "evaluate.log").exists()  # the patched evaluator never ran


def test_a_changed_frozen_evaluator_is_restored_or_never_run(tmp_path: Path) -> None:
    # Changed between trials (by anyone): the copy no longer matches the hashes frozen at the start.
    task = hostile_task(tmp_path, "")
    run(task, tmp_path)
    frozen = tmp_path / "campaign" / "evaluator" / "evaluate.py"
    kinder = frozen.read_text().replace("clean + noise * u", "10 + clean + noise * u")
    frozen.write_text(kinder)
    shutil.rmtree(tmp_path / "campaign" / "trials")
    result, _ = run(task, tmp_path)  # the next request restores it from the task, which still matches
    assert result.status == "succeeded" and result.metric == pytest.approx(HONEST)
    # when the task's own copy changed too, nothing can restore it: the trial runs nothing
    frozen.write_text(kinder)
    (task.evaluator_dir / "evaluate.py").write_text(kinder)
    shutil.rmtree(tmp_path / "campaign" / "trials")
    result, campaign = run(task, tmp_path)
    assert result.failure_class == "integrity" and "changed evaluator/evaluate.py" in result.failure_reason
    assert "when this trial started" in result.failure_reason
    assert not (campaign / "trials" / "000001" / "artifacts" / "answer.json").exists()  # not even the training


@pytest.mark.parametrize("part", ["sealed/labels.txt", "visible/train.txt"])
def test_a_program_that_edits_the_data_fails_on_integrity(tmp_path: Path, part: str) -> None:
    task = hostile_task(tmp_path, f"""
        with open(os.path.join("..", "..", "..", "data", "{part}"), "a") as f:
            f.write("edited by the program\\n")
    """, with_data=True)
    result, _ = run(task, tmp_path)
    assert result.status == "failed" and result.failure_class == "integrity"
    assert f"changed data/{part}" in result.failure_reason


def test_the_training_step_is_given_only_the_visible_data(tmp_path: Path) -> None:
    task = hostile_task(tmp_path, """
        json.dump({k: v for k, v in os.environ.items() if k.startswith("AUTOSCI_")}, open("env.json", "w"))
    """, with_data=True)
    result, campaign = run(task, tmp_path)
    assert result.status == "succeeded"
    env = json.loads((campaign / "trials" / "000001" / "work" / "env.json").read_text())
    assert env["AUTOSCI_DATA"] == str(campaign / "data" / "visible")
    assert not any("sealed" in value for value in env.values())


def test_a_link_planted_in_a_snapshot_fails_the_trial_and_is_never_copied(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("a file outside the campaign")
    task = hostile_task(tmp_path, f"""
        snapshot = os.path.join("..", "..", "..", "snapshots")
        for name in os.listdir(snapshot):
            os.symlink({str(outside)!r}, os.path.join(snapshot, name, "notes.txt"))
    """)
    result, campaign = run(task, tmp_path)
    assert result.failure_class == "integrity" and "added snapshot/notes.txt" in result.failure_reason
    (snapshot,) = [p.name for p in (campaign / "snapshots").iterdir()]
    with pytest.raises(TaskError, match="notes.txt: is a symbolic link .* refused, never followed"):
        build_snapshot(task, campaign, base_snapshot=snapshot)


def test_a_program_folder_with_a_link_is_refused(tmp_path: Path) -> None:
    task = hostile_task(tmp_path, "")
    (task.program_dir / "secret.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(TaskError, match="secret.txt: is a symbolic link"):
        build_snapshot(task, tmp_path / "campaign")
    assert not (tmp_path / "campaign" / "snapshots").exists() or not any((tmp_path / "campaign" / "snapshots").iterdir())


def test_a_program_that_trains_past_its_budget_is_stopped(tmp_path: Path) -> None:
    task = hostile_task(tmp_path, """
        while True:  # ignores any budget of its own
            time.sleep(0.1)
    """)
    start = time.monotonic()
    result, campaign = run(task, tmp_path, time_limit_s=1.5)
    assert time.monotonic() - start < 15
    assert result.failure_class == "timeout" and "limit of 1.5 s" in result.failure_reason
    assert not (campaign / "trials" / "000001" / "evaluate.log").exists()


def test_nothing_the_training_step_started_outlives_it(tmp_path: Path) -> None:
    # A helper left running could rewrite the artifacts while the evaluator reads them.
    task = hostile_task(tmp_path, """
        import subprocess
        helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("helper.pid", "w").write(str(helper.pid))
    """)
    result, campaign = run(task, tmp_path)
    assert result.status == "succeeded"
    pid = int((campaign / "trials" / "000001" / "work" / "helper.pid").read_text())
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kill is sent before run_trial returns; reaping it may lag
    assert not pid_alive(pid)


# ---- the program's code at evaluation time: its own process, arrays only --------------------------


def entry_point(tmp_path: Path, body: str) -> Path:
    program = tmp_path / "program"
    program.mkdir(exist_ok=True)
    (program / "model.py").write_text("import numpy as np\n\n\ndef load(artifacts):\n" + textwrap.indent(
        textwrap.dedent(body), "    "))
    return program


def test_an_entry_point_answers_with_arrays_and_cannot_touch_the_protocol(tmp_path: Path) -> None:
    from autosci_hpc.sealed import ProgramProcess, decode_strings, encode_strings

    # it prints to stdout (which must not corrupt the answers) and doubles what it is sent
    program = entry_point(tmp_path, """
        print("hello from the program")
        return lambda inputs: inputs["X"] * 2
    """)
    with ProgramProcess(program, "model:load", tmp_path, timeout_s=60) as proc:
        assert proc.call({"X": __import__("numpy").arange(3.0)})["output"].tolist() == [0.0, 2.0, 4.0]
        assert proc.call({"X": __import__("numpy").ones(2)})["output"].tolist() == [2.0, 2.0]
    assert decode_strings(encode_strings(["CCO", "c1ccccc1", ""], "smiles"), "smiles") == ["CCO", "c1ccccc1", ""]


@pytest.mark.parametrize("body,needle", [
    ("raise RuntimeError('no model here')", "failed to load: RuntimeError: no model here"),
    ("return lambda inputs: np.array(['a', 'b'])", "not numeric"),
    ("return lambda inputs: np.zeros(10**6)", "over the limit"),
    ("import time\nreturn lambda inputs: time.sleep(60)", "ran past 3 s"),
    ("import os\nreturn lambda inputs: os._exit(3)", r"exited \(status 3\) before answering"),
])
def test_a_hostile_entry_point_is_a_clear_error(tmp_path: Path, body: str, needle: str) -> None:
    import numpy as np

    from autosci_hpc.sealed import ProgramCallError, ProgramProcess

    program = entry_point(tmp_path, body)
    timeout_s = 3 if "sleep" in body else 120  # only the hanging one may run into its limit
    with pytest.raises(ProgramCallError, match=needle):
        with ProgramProcess(program, "model:load", tmp_path, timeout_s=timeout_s, max_bytes=1 << 20) as proc:
            proc.call({"X": np.arange(3.0)})


def test_an_entry_point_never_learns_where_the_sealed_data_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from autosci_hpc.sealed import ProgramProcess

    monkeypatch.setenv("AUTOSCI_SEALED", str(tmp_path / "sealed"))
    program = entry_point(tmp_path, """
        import os
        seen = float("AUTOSCI_SEALED" in os.environ)
        return lambda inputs: np.array([seen])
    """)
    with ProgramProcess(program, "model:load", tmp_path, timeout_s=60) as proc:
        assert proc.call({"X": np.zeros(1)})["output"].tolist() == [0.0]


# ---- in a campaign: the notice, no promotion, and the campaign goes on -----------------------------


def test_a_tampering_proposal_fails_on_integrity_is_named_and_the_campaign_goes_on(tmp_path: Path) -> None:
    from sqlmodel import select

    from autosci_hpc.coordination.coordinator import Coordinator
    from autosci_hpc.state.models import Champion, ForumPost, Trial
    from helpers import ScriptedPolicy, campaign_config

    # Without a sandbox, so that the tampering happens and the hash check (the last line of defence) is
    # what catches it; in the sandbox the evaluator is read-only and the attempt fails (tests/hostile).
    config = campaign_config(tmp_path, "toy", "budget.trials=9", "coordination.teams=1",
                             "executor.local.max_concurrent=1", "executor.sandbox=none")
    coordinator = Coordinator(config, config.campaign_folder(),
                              policy=ScriptedPolicy([{"behaviour": "tamper", "x": 0.6, "y": -0.3}, {"x": 0.3}], seed=1))
    assert coordinator.run().status == "finished"
    with coordinator.store.read() as session:
        trials = session.exec(select(Trial)).all()
        notices = session.exec(select(ForumPost).where(ForumPost.kind == "integrity")).all()
        champions = session.exec(select(Champion)).all()
    tampered = [t for t in trials if t.overrides.get("behaviour") == "tamper"]
    assert tampered and all(t.failure_class == "integrity" and t.metric is None for t in tampered)
    assert "changed evaluator/evaluate.py" in tampered[0].failure_reason
    assert notices and f"proposal #{tampered[0].proposal_id}" in notices[0].title
    assert all(c.proposal_id != tampered[0].proposal_id for c in champions)  # never promoted
    # the frozen copy was restored for the next trial: later trials were measured again
    later = [t for t in trials if (t.id or 0) > max(x.id or 0 for x in tampered)]
    assert any(t.status == "succeeded" for t in later)
