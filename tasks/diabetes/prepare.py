"""Prepare the diabetes data for task contract 2: visible training splits, sealed labels.

Usage (task.yaml's `prepare`, run once per campaign with cwd = the task folder):
    python prepare.py --out DATA_DIR

The data is scikit-learn's bundled diabetes set (442 patients, 10 raw baseline variables, target =
disease progression one year after baseline); nothing is downloaded. The split is fixed (constant
random states, never the trial's seed):

* a 20% test set (89 patients), held out for the private test metric;
* the other 353 "dev" patients in 5 folds. Split k trains on the 4 other folds and is validated on
  fold k; a trial with seed s uses split s % 5.

It writes (columns age, sex, bmi, bp, s1..s6, y):
  DATA_DIR/visible/split-k/train.csv   the training rows of split k, with their labels
  DATA_DIR/sealed/split-k/val.csv      fold k, inputs and labels: for the evaluator only
  DATA_DIR/sealed/test.csv             the test set, inputs and labels: for the evaluator only
  DATA_DIR/provenance.json
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

TEST_FRACTION = 0.2
TEST_SPLIT_STATE = 20240501  # fixed: the test set never depends on a trial's seed
FOLD_STATE = 20240502
FOLDS = 5
COLUMNS = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def write(path: Path, X, y) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join((*COLUMNS, "y"))]
    lines += [",".join(repr(float(v)) for v in (*row, target)) for row, target in zip(X, y)]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    out = Path(p.parse_args(argv).out)
    try:
        from sklearn.datasets import load_diabetes
        from sklearn.model_selection import KFold, train_test_split
    except ImportError:
        print("prepare: scikit-learn is not installed: pip install -e '.[tasks]'", file=sys.stderr)
        return 1
    X, y = load_diabetes(return_X_y=True, scaled=False)  # raw units (age in years, ...)
    X_dev, X_test, y_dev, y_test = train_test_split(X, y, test_size=TEST_FRACTION, random_state=TEST_SPLIT_STATE)
    for k, (train, val) in enumerate(KFold(n_splits=FOLDS, shuffle=True, random_state=FOLD_STATE).split(X_dev)):
        write(out / "visible" / f"split-{k}" / "train.csv", X_dev[train], y_dev[train])
        write(out / "sealed" / f"split-{k}" / "val.csv", X_dev[val], y_dev[val])
    write(out / "sealed" / "test.csv", X_test, y_test)
    provenance = {
        "source": "scikit-learn sklearn.datasets.load_diabetes(scaled=False)",
        "version": metadata.version("scikit-learn"),
        "license": "BSD-3-Clause",
        "citation": "Efron, Hastie, Johnstone and Tibshirani, Least Angle Regression, Ann Stat 32:407 (2004)",
        "split": f"test {TEST_FRACTION:g} (random_state {TEST_SPLIT_STATE}); {FOLDS} dev folds "
                 f"(random_state {FOLD_STATE}); seed s uses split s % {FOLDS}",
        "n_dev": int(len(y_dev)), "n_test": int(len(y_test)),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
