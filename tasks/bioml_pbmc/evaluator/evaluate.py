"""The bioml_pbmc task's sealed evaluator (task contract 2): not editable, frozen into each campaign.

Usage (task.yaml's `evaluate`, run by the harness after the training step has ended):
    python evaluate.py --program DIR --artifacts DIR --sealed DIR --split K --metrics metrics.json

It asks the program's entry point (`run:load`, in a process of its own that receives only the
expression matrix) to classify the validation fold of split K and the 210 test cells, then scores
the predicted class indices against labels the training step never had:

* `val_balanced_accuracy` (the metric, maximize, 0..1; chance is 0.1): mean per-class recall on
  fold K of the 490 development cells (98 cells); accuracy and macro-F1 beside it;
* `test_balanced_accuracy` (private, never printed): the same on the test cells.

A program that cannot answer (or answers something other than one class index per cell) exits 1
with one line saying why.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from autosci_hpc.sealed import ProgramCallError, ProgramProcess, predictions, write_metrics

N_CLASSES = 10


def classes(outputs: dict, n: int) -> np.ndarray:
    pred = predictions(outputs, n)
    if not np.all(pred == np.round(pred)) or pred.min() < 0 or pred.max() >= N_CLASSES:
        raise ProgramCallError(f"predictions must be class indices 0..{N_CLASSES - 1}")
    return pred.astype(np.int64)


def scores(y: np.ndarray, pred: np.ndarray, prefix: str) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    return {f"{prefix}_balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            f"{prefix}_accuracy": float(accuracy_score(y, pred)),
            f"{prefix}_macro_f1": float(f1_score(y, pred, average="macro", labels=list(range(N_CLASSES)),
                                                 zero_division=0))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--program", "--artifacts", "--sealed", "--metrics"):
        p.add_argument(name, required=True)
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--entry", default="run:load")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    sets = {}
    for prefix, path in (("val", Path(args.sealed) / f"split-{args.split}" / "val.npz"),
                         ("test", Path(args.sealed) / "test.npz")):
        with np.load(path) as data:
            sets[prefix] = (data["X"], data["y"])
    metrics: dict[str, float] = {}
    try:
        with ProgramProcess(args.program, args.entry, args.artifacts, timeout_s=args.timeout,
                            log=sys.stderr) as program:
            for prefix, (X, y) in sets.items():
                metrics.update(scores(y, classes(program.call({"X": X}), len(y)), prefix))
    except ProgramCallError as exc:
        print(f"cannot score the program: {exc}", file=sys.stderr)
        return 1
    write_metrics(args.metrics, {**metrics, "split": args.split, "n_val": len(sets["val"][1]),
                                 "n_test": len(sets["test"][1])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
