"""`autosci task check`: a broken task gets a clear error and the right exit code; a good one passes.

The broken tasks are copies of the toy fixture (pure Python, ~50 ms a run) with one thing broken.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autosci_hpc.cli import main as cli_main
from autosci_hpc.taskcheck import check_task, render

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "fixtures" / "tasks" / "toy"


def toy_copy(tmp_path: Path, behaviour: str = "ok") -> Path:
    task = tmp_path / "toy"
    shutil.copytree(TOY, task)
    config = task / "program" / "config.yaml"
    config.write_text(config.read_text().replace("behaviour: ok", f"behaviour: {behaviour}"))
    return task


def test_a_good_task_passes_with_its_metric(tmp_path):
    report = check_task(toy_copy(tmp_path))
    assert report.ok and report.exit_code == 0, render(report)
    assert report.metric is not None and report.test_metric is not None
    assert report.trial_seconds is not None and report.trial_seconds < 30
    assert [s.name for s in report.steps] == ["task.yaml", "held-out data", "champion run", "test metric private",
                                             "second seed", "unknown override"]
    assert report.folder is None  # the temporary campaign folder is gone
    assert "task check passed" in render(report)


def test_bad_yaml_is_an_invalid_definition(tmp_path):
    task = toy_copy(tmp_path)
    (task / "task.yaml").write_text("name: toy\nmetric: {name: score\n")
    report = check_task(task)
    assert report.exit_code == 2
    assert "not valid YAML" in render(report)


def test_a_missing_editable_file_is_named(tmp_path):
    task = toy_copy(tmp_path)
    (task / "program" / "train.py").unlink()
    report = check_task(task)
    assert report.exit_code == 2
    assert "editable file 'train.py' is not in" in render(report)


def test_contract_problems_are_listed(tmp_path):
    task = toy_copy(tmp_path)
    text = (task / "task.yaml").read_text()
    text = text.replace("--artifacts {artifacts} --metrics", "--metrics").replace("key: y,", "key: z,")
    text = text.replace("--metrics {metrics}\"\nevaluator", "\"\nevaluator")
    (task / "task.yaml").write_text(text.replace("--seed {seed} --metrics {metrics}\"", "--seed {seed} {sealed}\""))
    out = render(check_task(task))
    assert "command lacks {artifacts}" in out
    assert "evaluate lacks {metrics}" in out
    assert "axis 'z' is not a key of config.yaml" in out
    assert "exit 2" in out


def test_a_crashing_program_shows_its_log_tail(tmp_path):
    report = check_task(toy_copy(tmp_path, "crash"))
    assert report.exit_code == 1
    out = render(report)
    assert "FAIL champion run" in out and "program_error" in out
    assert "deliberate crash" in out and "Traceback" in out  # from the program's log tail


def test_a_missing_metric_is_named(tmp_path):
    report = check_task(toy_copy(tmp_path, "nometric"))
    assert report.exit_code == 1
    assert "bad_metrics" in render(report) and "'x' is not a finite number" in render(report)


def test_a_hanging_program_times_out(tmp_path):
    report = check_task(toy_copy(tmp_path, "hang"), time_limit_s=1)
    assert report.exit_code == 1
    assert "timeout" in render(report)


def test_printing_the_test_metric_fails(tmp_path):
    task = toy_copy(tmp_path)
    train = task / "program" / "train.py"
    source = train.read_text()
    assert source.rstrip().endswith("sys.exit(main())")
    # the toy's test metric is a formula of its config, so the program can compute and print it
    marker = '    if behaviour == "ok":\n'
    assert marker in source
    train.write_text(source.replace(marker, "    print('leak', repr(clean))\n" + marker))
    report = check_task(task)
    assert report.exit_code == 1
    assert "printed the test metric" in render(report)


def test_a_failing_prepare_is_a_data_error(tmp_path):
    task = toy_copy(tmp_path)
    (task / "prepare.py").write_text("import sys\nsys.exit('prepare: somepkg is not installed: pip install somepkg')\n")
    with open(task / "task.yaml", "a") as f:
        f.write('prepare: "{python} prepare.py {data}"\n')
    report = check_task(task)
    assert report.exit_code == 1
    out = render(report)
    assert "FAIL data" in out and "somepkg is not installed" in out


def test_prepared_data_reaches_the_program(tmp_path):
    task = toy_copy(tmp_path)
    (task / "prepare.py").write_text(
        "import json, pathlib, sys\n"
        "out = pathlib.Path(sys.argv[1]); (out / 'visible').mkdir(); (out / 'sealed').mkdir()\n"
        "(out / 'visible' / 'x.txt').write_text('0.6'); (out / 'sealed' / 'key.txt').write_text('-0.3')\n"
        "(out / 'provenance.json').write_text(json.dumps({'source': 's', 'license': 'l', 'citation': 'c'}))\n")
    text = (task / "task.yaml").read_text().replace("--artifacts {artifacts}", "--artifacts {artifacts} --data {data}", 1)
    (task / "task.yaml").write_text(text + 'prepare: "{python} prepare.py {data}"\n')
    train = task / "program" / "train.py"
    source = train.read_text()
    # accept --data and check the file is there (the toy program has no --data option of its own)
    train.write_text(source.replace("import argparse", "import argparse, os, sys as _sys\n"
                                    "_i = _sys.argv.index('--data'); _d = _sys.argv[_i + 1]; del _sys.argv[_i:_i + 2]\n"
                                    "assert open(os.path.join(_d, 'x.txt')).read() == '0.6'", 1))
    report = check_task(task, keep=True)
    assert report.ok, render(report)
    assert report.folder is not None and (report.folder / "data" / "manifest.json").is_file()
    assert [s.name for s in report.steps][:2] == ["task.yaml", "data"]
    shutil.rmtree(report.folder)


def test_a_task_without_a_sealed_evaluator_is_refused(tmp_path):
    task = toy_copy(tmp_path)
    text = (task / "task.yaml").read_text()
    (task / "task.yaml").write_text(text.replace("contract: 2\n", ""))
    assert "task contract 1 is not supported" in render(check_task(task))
    (task / "task.yaml").write_text(text.replace("evaluator: evaluator", "evaluator: program"))
    report = check_task(task)
    assert report.exit_code == 2 and "overlap" in render(report)


def test_prepared_data_needs_a_visible_and_a_sealed_part(tmp_path):
    task = toy_copy(tmp_path)
    (task / "prepare.py").write_text("import pathlib, sys\n(pathlib.Path(sys.argv[1]) / 'x.txt').write_text('0.6')\n")
    with open(task / "task.yaml", "a") as f:
        f.write('prepare: "{python} prepare.py {data}"\n')
    report = check_task(task)
    assert report.exit_code == 1 and "wrote no visible, sealed" in render(report)


def test_held_out_data_in_the_visible_part_is_caught(tmp_path):
    task = toy_copy(tmp_path)
    (task / "prepare.py").write_text(
        "import pathlib, sys\nout = pathlib.Path(sys.argv[1])\n"
        "(out / 'visible').mkdir(); (out / 'sealed').mkdir()\n"
        "rows = ''.join(f'patient {i:04d}, label {i * 7 % 13}\\n' for i in range(40))\n"
        "(out / 'sealed' / 'val.csv').write_text('id,label\\n' + rows)\n"
        "(out / 'visible' / 'train.csv').write_text('id,label\\npatient 9999, label 1\\n' + rows)\n")
    with open(task / "task.yaml", "a") as f:
        f.write('prepare: "{python} prepare.py {data}"\n')
    report = check_task(task)
    assert report.exit_code == 2
    assert "FAIL held-out data" in render(report) and "40 of 40 lines of the sealed data" in render(report)


def test_cli_exit_codes(tmp_path, capsys):
    assert cli_main(["task", "check", str(toy_copy(tmp_path / "a"))]) == 0
    assert "task check passed" in capsys.readouterr().out
    assert cli_main(["task", "check", str(tmp_path / "nowhere")]) == 2
    assert "no task.yaml here" in capsys.readouterr().out
    assert cli_main(["task", "check", str(toy_copy(tmp_path / "b", "crash"))]) == 1


@pytest.mark.slow
def test_diabetes_passes_with_a_metric(capsys):
    assert cli_main(["task", "check", str(REPO / "tasks" / "diabetes")]) == 0
    out = capsys.readouterr().out
    assert "ok   champion run" in out and "val_r2 = 0.36" in out and "task check passed" in out
    assert "ok   held-out data" in out


# ---- strictness: three lax programs the check must refuse -------------------------------------------


def edited_toy(tmp_path: Path, old: str, new: str) -> Path:
    task = toy_copy(tmp_path)
    train = task / "program" / "train.py"
    source = train.read_text()
    assert old in source
    train.write_text(source.replace(old, new, 1))
    return task


def test_a_program_that_ignores_the_seed_fails(tmp_path):
    # Under task contract 2 the toy's seed noise is drawn by the evaluator from the noise level the program
    # reports: a program that zeroes it gives every seed the same metric, as one ignoring --seed would.
    report = check_task(edited_toy(tmp_path, '"noise": noise', '"noise": 0.0'))
    assert report.exit_code == 1
    out = render(report)
    assert "FAIL second seed" in out and "ignores --seed" in out and "seed_dependent" in out


def test_a_task_that_declares_a_seed_independent_metric_may_give_one_metric(tmp_path):
    task = edited_toy(tmp_path, '"noise": noise', '"noise": 0.0')
    spec = task / "task.yaml"
    spec.write_text(spec.read_text() + "seed_dependent: false\n")
    report = check_task(task)
    assert report.ok, render(report)
    assert "second seed" in [s.name for s in report.steps]


def test_a_program_that_silently_ignores_an_unknown_override_fails(tmp_path):
    report = check_task(edited_toy(tmp_path, 'fail(f"unknown override key {key!r}: not in config.yaml")',
                                   "break  # silently ignored"))
    assert report.exit_code == 1
    out = render(report)
    assert "FAIL unknown override" in out and "silently ignores" in out and "exit with status 2" in out


@pytest.mark.parametrize("fmt", ["held-out R2 {:.3f}", "test {:.3e}", "held out: {:.1%}", "R2={!r}"])
def test_the_held_out_value_printed_in_any_formatting_fails(tmp_path, fmt):
    task = edited_toy(tmp_path, 'print(f"score={score:.6f}")',
                      f'print(f"score={{score:.6f}}"); print({fmt!r}.format(clean))')
    report = check_task(task)
    assert report.exit_code == 1, render(report)
    assert "printed the test metric" in render(report)


def test_a_strict_program_passes_every_strictness_check(tmp_path):
    report = check_task(toy_copy(tmp_path))
    assert report.ok, render(report)
    names = [s.name for s in report.steps]
    assert names[-3:] == ["test metric private", "second seed", "unknown override"]


def test_the_held_out_reading_ignores_chance_matches():
    from autosci_hpc.taskcheck import printed_held_out

    value = 0.71284
    assert printed_held_out("held-out R2 0.713", value) == "0.713"
    assert printed_held_out("r2 7.128e-01", value) == "7.128e-01"
    assert printed_held_out("71.3% held out", value) == "71.3%"
    # Too few digits, an integer, a progress percentage, or a number that is also the validation metric.
    for text in ("0.71", "epoch 713", "71% done", "lr 0.7"):
        assert printed_held_out(text, value) is None, text
    assert printed_held_out("val 0.713", value, others=[0.7131]) is None


def test_smoke_overrides_that_are_not_config_keys_are_an_error(tmp_path):
    from autosci_hpc.task import SmokeSpec, load_task
    from autosci_hpc.taskcheck import static_problems

    task = load_task(REPO / "tests" / "fixtures" / "tasks" / "ranks")
    assert static_problems(task)[0] == []
    bad = task.model_copy(update={"smoke": SmokeSpec(overrides={"sleep": 0.0, "steps": 2})})
    assert any("smoke.overrides: steps not key(s) of config.yaml" in e for e in static_problems(bad)[0])


def test_a_time_budgeted_task_must_say_noise_timed() -> None:
    """A training run cut off by wall time measures the machine's load too: task check warns when such a
    task keeps the default `noise: seeded` (its champion's stored runs would be trusted), and the shipped
    GPU profile declares `noise: timed`."""
    from autosci_hpc.task import load_task
    from autosci_hpc.taskcheck import static_problems

    h100 = load_task(Path(__file__).resolve().parents[2] / "tasks" / "tinygpt" / "h100")
    assert h100.noise == "timed" and static_problems(h100) == ([], [])
    seeded = h100.model_copy(update={"noise": "seeded"})
    errors, warnings = static_problems(seeded)
    assert errors == [] and len(warnings) == 1
    assert "train.time_budget_s=180" in warnings[0] and "`noise: timed`" in warnings[0]
