"""The diabetes task's sealed evaluator (task contract 2): not editable, frozen into each campaign.

Usage (task.yaml's `evaluate`, run by the harness after the training step has ended):
    python evaluate.py --program DIR --artifacts DIR --sealed DIR --split K --metrics metrics.json

It asks the program's declared entry point (`train:load`, in a process of its own that receives only
the inputs) to predict the validation fold of split K and the test set, then scores the predictions
against labels the training step never had:

* `val_r2` (the metric, maximize): R^2 of the predictions for fold K of the dev patients;
* `test_r2` (private, never printed): R^2 on the 89 held-out test patients.

R^2 = 1 - SS_res / SS_tot, with SS_tot around the scored set's own mean. A program that cannot
answer (no model, a crash, wrong shape, non-finite values) exits 1 with one line saying why.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from autosci_hpc.sealed import ProgramCallError, ProgramProcess, predictions, write_metrics

N_FEATURES = 10


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return table[:, :N_FEATURES], table[:, N_FEATURES]


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    return float(1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--program", required=True)
    p.add_argument("--artifacts", required=True)
    p.add_argument("--sealed", required=True)
    p.add_argument("--split", type=int, required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--entry", default="train:load")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    X_val, y_val = load(Path(args.sealed) / f"split-{args.split}" / "val.csv")
    X_test, y_test = load(Path(args.sealed) / "test.csv")
    try:
        with ProgramProcess(args.program, args.entry, args.artifacts, timeout_s=args.timeout,
                            log=sys.stderr) as program:
            pred_val = predictions(program.call({"X": X_val}), len(y_val))
            pred_test = predictions(program.call({"X": X_test}), len(y_test))
    except ProgramCallError as exc:
        print(f"cannot score the program: {exc}", file=sys.stderr)
        return 1
    write_metrics(args.metrics, {"val_r2": r2(y_val, pred_val), "test_r2": r2(y_test, pred_test),
                                 "split": args.split, "n_val": len(y_val), "n_test": len(y_test)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
