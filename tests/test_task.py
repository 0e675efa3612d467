"""Task folders, content-addressed snapshots, code edits and change signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

from autosci_hpc.task import (Edit, PatchError, TaskError, build_snapshot, change_signature, directions,
                              load_task)
from helpers import FIXTURE_TASKS

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_tasks_load() -> None:
    for folder in [ROOT / "tasks" / "diabetes", FIXTURE_TASKS / "toy", FIXTURE_TASKS / "flat"]:
        task = load_task(folder)
        assert task.axes and task.program_dir.is_dir() and task.base_config()


def test_identical_edits_share_one_snapshot(tmp_path: Path) -> None:
    task = load_task(FIXTURE_TASKS / "toy")
    base = build_snapshot(task, tmp_path)
    edit = Edit(path="config.yaml", search="noise: 0.01", replace="noise: 0.02")
    a = build_snapshot(task, tmp_path, base, [edit])
    b = build_snapshot(task, tmp_path, base, [Edit(**edit.model_dump())])
    assert a == b != base
    assert "noise: 0.02" in (tmp_path / "snapshots" / a / "config.yaml").read_text()
    assert "noise: 0.01" in (tmp_path / "snapshots" / base / "config.yaml").read_text()
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == sorted({a, base})


def test_edits_fail_loudly_with_the_reason(tmp_path: Path) -> None:
    task = load_task(FIXTURE_TASKS / "toy")
    with pytest.raises(PatchError, match="occurs 0 times"):
        build_snapshot(task, tmp_path, "", [Edit(path="config.yaml", search="nope", replace="x")])
    with pytest.raises(PatchError, match="not editable"):
        build_snapshot(task, tmp_path, "", [Edit(path="task.yaml", search="a", replace="b")])


def test_signatures_are_canonical() -> None:
    task = load_task(FIXTURE_TASKS / "toy")
    assert change_signature({"y": 0.30000001, "x": 1}, []) == change_signature({"x": 1, "y": 0.3}, [])
    assert directions(task, {"x": -0.99}, []) == ["x~bin0/6"]
    assert directions(task, {"x": 0.99}, []) == ["x~bin5/6"]


def test_a_bad_task_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="no task.yaml"):
        load_task(tmp_path)
    (tmp_path / "task.yaml").write_text("name: t\nmetric: {name: m, direction: up}\n")
    with pytest.raises(TaskError, match=str(tmp_path / "task.yaml")):
        load_task(tmp_path)


def test_task_data_is_prepared_once_with_provenance_and_checksums(tmp_path: Path) -> None:
    import shutil

    from autosci_hpc.data import DataError, prepare_data

    task_dir = tmp_path / "task"
    shutil.copytree(FIXTURE_TASKS / "toy", task_dir)
    (task_dir / "prepare.py").write_text(
        "import json, pathlib, sys\n"
        "out = pathlib.Path(sys.argv[1]); (out / 'visible').mkdir(); (out / 'sealed').mkdir()\n"
        "(out / 'visible' / 'table.csv').write_text('a,b\\n1,2\\n')\n"
        "(out / 'sealed' / 'labels.csv').write_text('b\\n2\\n')\n"
        "(out / 'provenance.json').write_text(json.dumps({'source': 'made up', 'license': 'CC0'}))\n"
        "print('prepared', file=sys.stderr)\n")
    spec = (task_dir / "task.yaml").read_text() + 'prepare: "{python} prepare.py {data}"\n'
    (task_dir / "task.yaml").write_text(spec)
    task = load_task(task_dir)
    campaign = tmp_path / "campaign"
    manifest = prepare_data(task, campaign)
    assert manifest["provenance"]["license"] == "CC0"
    assert set(manifest["sha256"]) == {"visible/table.csv", "sealed/labels.csv", "provenance.json"}
    (task_dir / "prepare.py").write_text("raise SystemExit('must not run twice')\n")
    assert prepare_data(task, campaign) == manifest  # reused, not re-run
    with pytest.raises(DataError, match="must not run twice"):
        prepare_data(task, tmp_path / "other")  # a failure names the task and shows its output


@pytest.mark.parametrize("old, new, says", [
    ("\ntime_limit_s: 20", "\ntime_limit_s: .inf", "bad value for 'time_limit_s': Input should be a finite number"),
    ("{key: x, kind: float, low: -1.0", "{key: x, kind: float, low: -.inf", "Input should be a finite number"),
])
def test_a_task_with_an_infinite_limit_or_range_is_refused_in_one_line(tmp_path: Path, old: str, new: str,
                                                                       says: str) -> None:
    """No limit is no limit: an infinite time limit would let a trial run forever, an infinite axis
    bound would put every value of it in one dead-end bin."""
    import shutil

    task = tmp_path / "toy"
    shutil.copytree(FIXTURE_TASKS / "toy", task)
    text = (task / "task.yaml").read_text()
    assert old in text
    (task / "task.yaml").write_text(text.replace(old, new))
    with pytest.raises(TaskError) as info:
        load_task(task)
    assert says in str(info.value) and "\n" not in str(info.value)
