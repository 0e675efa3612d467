"""Protein fitness from a deep mutational scan: the evaluation harness (not editable by agents).

Usage (the autosci_hpc task contract):
    python evaluate.py --config config.yaml --overrides overrides.json --seed 0 \
        --metrics metrics.json --data DATA_DIR

This file is the measurement: it reads the prepared data (prepare.py), applies the overrides to
config.yaml (an unknown key exits 2), asks the editable model code in train.py for features and
predictions, cross-validates on the development variants and grades the held-out test variants.

* `val_spearman` (the metric, maximize): the mean over three ProteinGym-style fold schemes of the
  mean Spearman rho over their 5 folds, on the development variants:
    - random:     variants shuffled into 5 folds (the shuffle depends on --seed);
    - modulo:     position i (0-based) belongs to fold i % 5;
    - contiguous: the sequence cut into 5 contiguous blocks of positions.
  In the two position schemes a variant is tested in fold f when all its mutated positions are in
  fold f, and trained on when none are; variants that straddle folds sit that fold out. A fold
  whose predictions are constant scores 0 (no ranking).
* `test_spearman` (private, never printed): the model is refit on all development variants and
  predicts the test variants; the grader reads their labels from DATA_DIR/private and scores the
  mean of two Spearman rhos: variants at held-out positions, and a random 10% of the others.
"""
from __future__ import annotations

import os

# One core and deterministic BLAS reductions: set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import copy
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml

FOLDS = 5
SCHEMES = ("random", "modulo", "contiguous")


class ConfigError(Exception):
    """A bad config or override (exit code 2)."""


# --------------------------------------------------------------------------- config
def load_config(path: str) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return cfg


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """A copy of cfg with dotted-key overrides applied; every key must exist in config.yaml."""
    if not isinstance(overrides, dict):
        raise ConfigError("overrides must be a JSON object mapping dotted keys to values")
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"unknown override key {key!r}: {'.'.join(parts[:i + 1])!r} "
                                  f"is not in config.yaml")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return cfg


# --------------------------------------------------------------------------- data
@dataclass
class Variants:
    """Mutations of n variants in coordinate form: mutation k is (row[k], pos[k], wt_aa[k], mut_aa[k]).

    Positions are 0-based; amino acids are indices into `alphabet`. No labels in here."""
    wildtype: str
    alphabet: str
    n: int
    row: "object"
    pos: "object"
    wt_aa: "object"
    mut_aa: "object"
    n_mut: "object"

    @property
    def length(self) -> int:
        return len(self.wildtype)


def parse_mutants(mutants, wildtype: str, alphabet: str) -> Variants:
    import numpy as np
    import pandas as pd

    tokens = pd.Series(list(mutants), dtype=str).str.split(":").explode()
    row = tokens.index.to_numpy(dtype=np.int64)
    text = tokens.to_numpy(dtype=str)
    wt = np.array([t[0] for t in text])
    mut = np.array([t[-1] for t in text])
    pos = np.array([int(t[1:-1]) - 1 for t in text], dtype=np.int64)
    index = {a: i for i, a in enumerate(alphabet)}
    wt_aa = np.array([index[a] for a in wt], dtype=np.int64)
    mut_aa = np.array([index[a] for a in mut], dtype=np.int64)
    if not all(wildtype[p] == w for p, w in zip(pos, wt)):
        raise ValueError("a mutant's wild-type residue does not match the wild type")
    n = len(mutants)
    return Variants(wildtype, alphabet, n, row, pos, wt_aa, mut_aa, np.bincount(row, minlength=n))


def load_data(data_dir: Path):
    import pandas as pd

    meta = json.loads((data_dir / "public" / "meta.json").read_text())
    dev = pd.read_csv(data_dir / "public" / "dev.csv")
    test = pd.read_csv(data_dir / "public" / "test.csv")
    both = parse_mutants(list(dev["mutant"]) + list(test["mutant"]), meta["wildtype"], meta["alphabet"])
    return meta, dev, test, both


# --------------------------------------------------------------------------- scoring
def spearman(y, pred) -> float:
    import numpy as np
    from scipy.stats import spearmanr

    pred = np.asarray(pred, dtype=float)
    if not np.all(np.isfinite(pred)):
        raise ValueError("the model predicted non-finite values")
    if np.ptp(pred) <= 1e-9 * (1.0 + np.max(np.abs(pred))):
        return 0.0  # constant predictions rank nothing
    return float(spearmanr(y, pred).statistic)


def position_sets(variants: Variants, rows):
    """For each of `rows`, the set of positions it mutates."""
    out: dict[int, set] = {int(r): set() for r in rows}
    for r, p in zip(variants.row, variants.pos):
        if int(r) in out:
            out[int(r)].add(int(p))
    return [out[int(r)] for r in rows]


def folds(scheme: str, dev_rows, positions, length: int, seed: int):
    """(train rows, test rows) for each of the FOLDS folds of a scheme."""
    import numpy as np

    dev_rows = np.asarray(dev_rows)
    if scheme == "random":
        order = np.random.RandomState(seed).permutation(len(dev_rows))
        fold_of = np.empty(len(dev_rows), dtype=np.int64)
        fold_of[order] = np.arange(len(dev_rows)) % FOLDS
        return [(dev_rows[fold_of != f], dev_rows[fold_of == f]) for f in range(FOLDS)]
    if scheme == "modulo":
        def fold_of_pos(i):
            return i % FOLDS
    else:
        def fold_of_pos(i):
            return min(FOLDS - 1, i * FOLDS // length)
    fold_sets = [{fold_of_pos(i) for i in s} for s in positions]
    out = []
    for f in range(FOLDS):
        train = np.array([f not in s for s in fold_sets])
        test = np.array([s == {f} for s in fold_sets])
        out.append((dev_rows[train], dev_rows[test]))
    return out


def grade(data_dir: Path, pred_test) -> dict:
    """The private grader: test predictions (in public/test.csv order) against hidden labels."""
    import numpy as np
    import pandas as pd

    labels = pd.read_csv(data_dir / "private" / "test.csv").sort_values("id")
    pred = np.asarray(pred_test, dtype=float)
    if pred.shape != (len(labels),):
        raise ValueError(f"expected {len(labels)} test predictions, got shape {pred.shape}")
    parts = {}
    for part in ("positions", "random"):
        mask = (labels["part"] == part).to_numpy()
        parts[part] = spearman(labels["y"].to_numpy()[mask], pred[mask])
    return {"test_spearman": float(np.mean(list(parts.values()))),
            "test_spearman_positions": parts["positions"], "test_spearman_random": parts["random"]}


# --------------------------------------------------------------------------- run
def run(cfg: dict, seed: int, data_dir: Path) -> tuple[dict, dict]:
    import numpy as np

    import train  # the editable model code (features + model)

    meta, dev, test, variants = load_data(data_dir)
    n_dev = len(dev)
    y, dy = dev["y"].to_numpy(float), dev["dy"].to_numpy(float)
    X = train.make_features(cfg, variants)
    if X.shape[0] != variants.n:
        raise ValueError(f"make_features returned {X.shape[0]} rows for {variants.n} variants")
    dev_rows = np.arange(n_dev)
    positions = position_sets(variants, dev_rows)
    per_scheme, fold_scores = {}, {}
    for scheme in SCHEMES:
        scores = []
        for tr, te in folds(scheme, dev_rows, positions, variants.length, seed):
            pred = train.fit_predict(cfg, X[tr], y[tr], dy[tr], X[te], seed)
            scores.append(spearman(y[te], pred))
        fold_scores[scheme] = scores
        per_scheme[scheme] = float(np.mean(scores))
    pred_test = train.fit_predict(cfg, X[:n_dev], y, dy, X[n_dev:], seed)
    public = {
        "val_spearman": float(np.mean(list(per_scheme.values()))),
        **{f"val_{s}": per_scheme[s] for s in SCHEMES},
        "val_fold_spearman": fold_scores,
        "assay": meta["assay"], "n_dev": int(n_dev), "n_features": int(X.shape[1]),
    }
    return public, grade(data_dir, pred_test)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--overrides", default=None, help="JSON file: dotted key -> value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", default="metrics.json")
    p.add_argument("--data", default=os.environ.get("AUTOSCI_DATA", ""),
                   help="the prepared data folder (default: $AUTOSCI_DATA)")
    args = p.parse_args(argv)

    t0 = time.time()
    data_dir = Path(args.data) if args.data else None
    if data_dir is None or not (data_dir / "public" / "meta.json").is_file():
        print(f"error: no prepared data in {args.data or '(no --data, no $AUTOSCI_DATA)'}: run the task's "
              "prepare command (python prepare.py --out DATA_DIR)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
        if args.overrides:
            with open(args.overrides) as f:
                cfg = apply_overrides(cfg, json.load(f))
        import train
        bad_config = (ConfigError, getattr(train, "ConfigError", ConfigError))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                public, private = run(cfg, args.seed, data_dir)
        except bad_config as e:
            raise ConfigError(str(e)) from None
    except (ConfigError, json.JSONDecodeError) as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2

    print(f"protein_fitness [{public['assay']}]: {train.describe(cfg)}")
    print(f"seed={args.seed}: {public['n_dev']} dev variants, {public['n_features']} features")
    for scheme in SCHEMES:
        folds_text = " ".join(f"{s:.3f}" for s in public["val_fold_spearman"][scheme])
        print(f"  {scheme:10s} spearman {public[f'val_{scheme}']:.4f}  (folds {folds_text})")
    metrics = {**public, **private}
    if not all(math.isfinite(metrics[k]) for k in ("val_spearman", "test_spearman")):
        print("error: non-finite metric", file=sys.stderr)
        return 1
    with open(args.metrics, "w") as f:  # no timings in here: metrics are bit-reproducible
        json.dump(metrics, f)
    print(f"val_spearman={public['val_spearman']:.4f}, {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
