"""Run the task programs the way the task contract says and check what they write.

Each run copies the task's program folder to a fresh directory, formats the
task.yaml command with sys.executable, an overrides JSON file, a seed and a
metrics path, runs it with cwd = the copy, and reads the metrics file.

The diabetes runs import scikit-learn (~1-1.5 s each); they are marked ``slow``
and started in parallel from one module-scoped fixture. The toy/flat fixture
programs are pure Python (json + PyYAML) and take a few tens of milliseconds.
"""
from __future__ import annotations

import ast
import itertools
import json
import math
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DIABETES = REPO / "tasks" / "diabetes"
TOY = REPO / "tests" / "fixtures" / "tasks" / "toy"
FLAT = REPO / "tests" / "fixtures" / "tasks" / "flat"

_counter = itertools.count()


# --------------------------------------------------------------------------- helpers
def load_task(task_dir: Path) -> dict:
    return yaml.safe_load((task_dir / "task.yaml").read_text())


@dataclass
class Launched:
    proc: subprocess.Popen
    metrics_path: Path
    started: float


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    metrics_text: str | None
    seconds: float

    @property
    def metrics(self) -> dict:
        assert self.metrics_text is not None, f"no metrics file; stderr:\n{self.stderr}"
        return json.loads(self.metrics_text)


def launch(task_dir: Path, base: Path, overrides: dict | None = None, seed: int = 0) -> Launched:
    task = load_task(task_dir)
    run_dir = base / f"run{next(_counter)}"
    work = run_dir / "work"
    shutil.copytree(task_dir / task["program"], work)
    ov = run_dir / "overrides.json"
    ov.write_text(json.dumps(overrides or {}))
    metrics = run_dir / "metrics.json"
    argv = [tok.format(python=sys.executable, overrides=str(ov), seed=seed, metrics=str(metrics))
            for tok in shlex.split(task["command"])]
    proc = subprocess.Popen(argv, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return Launched(proc, metrics, time.monotonic())


def finish(run: Launched, timeout: float = 120) -> Result:
    out, err = run.proc.communicate(timeout=timeout)
    seconds = time.monotonic() - run.started
    text = run.metrics_path.read_text() if run.metrics_path.exists() else None
    return Result(run.proc.returncode, out, err, text, seconds)


def run_program(task_dir: Path, base: Path, overrides: dict | None = None, seed: int = 0,
                timeout: float = 60) -> Result:
    return finish(launch(task_dir, base, overrides, seed), timeout)


def flatten(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------- task.yaml
@pytest.mark.parametrize("task_dir", [DIABETES, TOY, FLAT], ids=lambda p: p.name)
def test_task_yaml_consistent_with_program(task_dir):
    task = load_task(task_dir)
    for key in ("name", "version", "description", "metric", "test_metric", "program",
                "command", "editable", "time_limit_s", "axes"):
        assert key in task, key
    assert task["name"] == task_dir.name
    assert task["metric"]["direction"] in ("maximize", "minimize")
    assert task["metric"]["name"] != task["test_metric"]
    program = task_dir / task["program"]
    for f in task["editable"]:
        assert (program / f).is_file(), f
    for placeholder in ("{python}", "{overrides}", "{seed}", "{metrics}"):
        assert placeholder in task["command"]
    config = flatten(yaml.safe_load((program / "config.yaml").read_text()))
    for axis in task["axes"]:
        assert axis["key"] in config, f"axis {axis['key']} is not a config.yaml key"
        assert axis["group"]
        kind = axis["kind"]
        if kind == "choice":
            assert axis["values"]
        else:
            assert kind in ("float", "log_float", "int"), kind
            assert axis["low"] < axis["high"]
            if kind == "log_float":
                assert axis["low"] > 0
    assert "behaviour" not in {a["key"] for a in task["axes"]}


# --------------------------------------------------------------------------- diabetes
BETTER = {"model.alpha": 30.0}  # same ridge, sensible regularization


@pytest.fixture(scope="module")
def diabetes_runs(tmp_path_factory):
    """All heavy diabetes runs, started at once so they overlap."""
    base = tmp_path_factory.mktemp("diabetes")
    plan = {
        "champ0": ({}, 0), "champ0_again": ({}, 0), "champ1": ({}, 1), "champ2": ({}, 2),
        "better0": (BETTER, 0), "better1": (BETTER, 1), "better2": (BETTER, 2),
    }
    launched = {k: launch(DIABETES, base, ov, seed) for k, (ov, seed) in plan.items()}
    return {k: finish(r) for k, r in launched.items()}


@pytest.mark.slow
def test_diabetes_champion_finite_and_deterministic(diabetes_runs):
    a, b = diabetes_runs["champ0"], diabetes_runs["champ0_again"]
    for r in (a, b):
        assert r.rc == 0, r.stderr
        for key in ("val_r2", "test_r2"):
            assert isinstance(r.metrics[key], float) and math.isfinite(r.metrics[key])
    assert a.metrics_text == b.metrics_text  # bit-identical for the same seed
    assert 0.3 < a.metrics["val_r2"] < 0.45  # modest baseline (README: ~0.42)


@pytest.mark.slow
def test_diabetes_seed_changes_val_not_test_split(diabetes_runs):
    m0, m1 = diabetes_runs["champ0"].metrics, diabetes_runs["champ1"].metrics
    assert m0["val_r2"] != m1["val_r2"]
    assert m0["val_fold_r2"] != m1["val_fold_r2"]
    # ridge is deterministic and the test split is fixed: test_r2 cannot depend on the seed
    assert m0["test_r2"] == m1["test_r2"]


@pytest.mark.slow
def test_diabetes_stdout_never_shows_test_metric(diabetes_runs):
    r = diabetes_runs["champ0"]
    assert "val_r2" in r.stdout
    assert "test" not in r.stdout.lower()
    assert f"{r.metrics['test_r2']:.4f}" not in r.stdout
    assert f"{r.metrics['test_r2']:.3f}" not in r.stdout


@pytest.mark.slow
def test_diabetes_better_config_beats_champion(diabetes_runs):
    champ = [diabetes_runs[f"champ{s}"].metrics["val_r2"] for s in range(3)]
    better = [diabetes_runs[f"better{s}"].metrics["val_r2"] for s in range(3)]
    assert sum(better) / 3 > sum(champ) / 3 + 0.01
    assert all(b > c for b, c in zip(better, champ))  # paired: same folds per seed


def test_diabetes_unknown_override_key_exits_2(tmp_path):
    r = run_program(DIABETES, tmp_path, {"model.alpah": 1.0})
    assert r.rc == 2
    assert "model.alpah" in r.stderr
    assert r.metrics_text is None


def test_diabetes_bad_value_exits_2(tmp_path):
    r = run_program(DIABETES, tmp_path, {"model.name": "xgboost"})
    assert r.rc == 2
    assert "model.name" in r.stderr


# --------------------------------------------------------------------------- toy
def clean(x, y):
    return 1.0 - (x - 0.6) ** 2 - (y + 0.3) ** 2


def test_toy_program_is_pure_python():
    for task_dir in (TOY, FLAT):
        tree = ast.parse((task_dir / "program" / "train.py").read_text())
        mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
        mods |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
        assert not mods & {"numpy", "sklearn", "scipy", "pandas", "torch"}, mods


def test_toy_ok_score_formula_and_fast(tmp_path):
    r = run_program(TOY, tmp_path, {"x": 0.2, "y": 0.1}, seed=5)
    assert r.rc == 0, r.stderr
    m = r.metrics
    import random
    u = random.Random(5).uniform(-1, 1)
    assert m["test_score"] == pytest.approx(clean(0.2, 0.1), abs=1e-12)
    assert m["score"] == pytest.approx(clean(0.2, 0.1) + 0.01 * u, abs=1e-12)
    assert "test" not in r.stdout.lower()
    assert r.seconds < 2.0  # typically ~0.05 s


def test_toy_optimum_without_noise(tmp_path):
    r = run_program(TOY, tmp_path, {"x": 0.6, "y": -0.3, "noise": 0.0}, seed=0)
    assert r.metrics == {"score": 1.0, "test_score": 1.0}


def test_toy_deterministic_and_seed_dependent(tmp_path):
    a = run_program(TOY, tmp_path, {"x": 0.5}, seed=7)
    b = run_program(TOY, tmp_path, {"x": 0.5}, seed=7)
    c = run_program(TOY, tmp_path, {"x": 0.5}, seed=8)
    assert a.metrics_text == b.metrics_text
    assert a.metrics["score"] != c.metrics["score"]
    assert a.metrics["test_score"] == c.metrics["test_score"]


def test_toy_default_overrides_empty(tmp_path):
    r = run_program(TOY, tmp_path, {}, seed=0)
    assert r.rc == 0
    assert r.metrics["test_score"] == pytest.approx(clean(0.0, 0.0))


def test_toy_lucky_seed(tmp_path):
    ov = {"lucky_seed": 3, "lucky_bonus": 0.5, "noise": 0.0, "x": 0.1}
    lucky = run_program(TOY, tmp_path, ov, seed=3).metrics
    unlucky = [run_program(TOY, tmp_path, ov, seed=s).metrics for s in (0, 4)]
    assert lucky["score"] == pytest.approx(clean(0.1, 0.0) + 0.5)
    for m in unlucky:
        assert m["score"] == pytest.approx(clean(0.1, 0.0) - 0.5)
    for m in [lucky, *unlucky]:
        assert m["test_score"] == pytest.approx(clean(0.1, 0.0))  # test never lucky


def test_toy_unknown_override_key_exits_2(tmp_path):
    r = run_program(TOY, tmp_path, {"z": 1.0})
    assert r.rc == 2
    assert "'z'" in r.stderr
    assert r.metrics_text is None


def test_toy_crash(tmp_path):
    r = run_program(TOY, tmp_path, {"behaviour": "crash"})
    assert r.rc != 0
    assert "Traceback" in r.stderr and "crash" in r.stderr
    assert r.metrics_text is None


def test_toy_hang(tmp_path):
    run = launch(TOY, tmp_path, {"behaviour": "hang"})
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            run.proc.communicate(timeout=2)
        assert run.proc.poll() is None  # still running
    finally:
        run.proc.kill()
        run.proc.communicate()
    assert not run.metrics_path.exists()


def test_toy_malformed(tmp_path):
    r = run_program(TOY, tmp_path, {"behaviour": "malformed"})
    assert r.rc == 0
    assert r.metrics_text == '{"score": '
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.metrics_text)


def test_toy_glued(tmp_path):
    r = run_program(TOY, tmp_path, {"behaviour": "glued"})
    assert r.rc == 0
    assert r.metrics_text == '{"score":1.0,"test_score":1.0}{"score":1.0,"test_score":1.0}'
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        json.loads(r.metrics_text)


def test_toy_nometric(tmp_path):
    r = run_program(TOY, tmp_path, {"behaviour": "nometric"})
    assert r.rc == 0
    assert r.metrics == {"other": 1}


def test_toy_nan(tmp_path):
    r = run_program(TOY, tmp_path, {"behaviour": "nan"})
    assert r.rc == 0
    assert '"score": NaN' in r.metrics_text
    assert math.isnan(r.metrics["score"])
    assert math.isfinite(r.metrics["test_score"])


# --------------------------------------------------------------------------- flat
def test_flat_ignores_x_and_y(tmp_path):
    runs = [run_program(FLAT, tmp_path, {"x": x, "y": y}, seed=2)
            for x, y in [(0.0, 0.0), (0.6, -0.3), (-1.0, 1.0)]]
    texts = {r.metrics_text for r in runs}
    assert len(texts) == 1, texts
    m = runs[0].metrics
    assert m["test_score"] == 0.5
    assert abs(m["score"] - 0.5) <= 0.01
    other_seed = run_program(FLAT, tmp_path, {"x": 0.6}, seed=3).metrics
    assert other_seed["score"] != m["score"] and other_seed["test_score"] == 0.5
