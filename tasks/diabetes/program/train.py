"""Diabetes progression regression: the program agents improve (task contract 2: it only trains).

Usage (the autosci_hpc task contract):
    python train.py --config config.yaml --overrides overrides.json --seed 0 --data DATA --artifacts DIR

* ``config.yaml`` is a nested YAML file; ``overrides.json`` maps dotted config
  keys (e.g. ``"model.alpha"``) to values.  An override key that is not in
  config.yaml is an error (exit code 2).
* Data: ``DATA/train.csv``, the training patients of this trial's split (10 raw
  baseline variables age, sex, bmi, bp, s1..s6, and y = disease progression one
  year after baseline).  Nothing else: the validation and test patients are sealed.
* It fits the pipeline and saves it as ``DIR/model.pkl``.  The sealed evaluator
  then calls ``load(DIR)`` (below) in a process of its own and asks the returned
  function for predictions of inputs it chooses; it computes ``val_r2`` and the
  private ``test_r2`` itself.
* ``--seed`` seeds every random part of the model; the same (config, overrides,
  seed) gives a bit-identical model.
"""
from __future__ import annotations

import os

# One core, and deterministic BLAS reductions: set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import copy
import json
import math
import pickle
import sys
import time
import warnings

import yaml


MODELS = ("ridge", "lasso", "elasticnet", "gbr", "rf", "knn", "svr")
SCALERS = ("none", "standard", "quantile", "robust")


class ConfigError(Exception):
    """A bad config or override (reported with exit code 2)."""


# --------------------------------------------------------------------------- config
def load_config(path: str) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return cfg


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """Return a copy of cfg with dotted-key overrides applied.

    Every key must already exist in cfg (as a leaf or sub-mapping)."""
    if not isinstance(overrides, dict):
        raise ConfigError("overrides must be a JSON object mapping dotted keys to values")
    cfg = copy.deepcopy(cfg)
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(
                    f"unknown override key {key!r}: {'.'.join(parts[:i + 1])!r} "
                    f"is not in config.yaml")
            if i == len(parts) - 1:
                node[part] = value
            else:
                node = node[part]
    return cfg


def _int(v, name):
    if isinstance(v, bool) or v is None:
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if isinstance(v, float):
        if not v.is_integer():
            raise ConfigError(f"{name} must be an integer, got {v!r}")
        v = int(v)
    if not isinstance(v, int):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    return v


def _float(v, name, positive=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(f"{name} must be > 0, got {v!r}")
    return float(v)


def _bool(v, name):
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    return v


# --------------------------------------------------------------------------- model
def build_model(cfg: dict, seed: int):
    # Estimator modules are imported only when used: sklearn start-up dominates a trial.
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import (PolynomialFeatures, QuantileTransformer,
                                       RobustScaler, StandardScaler)
    import numpy as np

    m, fe = cfg["model"], cfg["features"]
    name = m["name"]
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {list(MODELS)}, got {name!r}")

    steps = []
    scaler = fe["scaler"]
    if scaler == "standard":
        steps.append(StandardScaler())
    elif scaler == "robust":
        steps.append(RobustScaler())
    elif scaler == "quantile":
        steps.append(QuantileTransformer(n_quantiles=100, output_distribution="normal",
                                         random_state=seed))
    elif scaler != "none":
        raise ConfigError(f"features.scaler must be one of {list(SCALERS)}, got {scaler!r}")

    degree = _int(fe["poly_degree"], "features.poly_degree")
    if not 1 <= degree <= 3:
        raise ConfigError(f"features.poly_degree must be 1..3, got {degree}")
    if degree > 1:
        steps.append(PolynomialFeatures(
            degree=degree, include_bias=False,
            interaction_only=_bool(fe["interactions_only"], "features.interactions_only")))
        if scaler != "none":  # keep expanded features on a comparable scale
            steps.append(StandardScaler())

    max_depth = m["max_depth"]
    max_depth = None if max_depth is None else _int(max_depth, "model.max_depth")
    if name == "ridge":
        from sklearn.linear_model import Ridge
        est = Ridge(alpha=_float(m["alpha"], "model.alpha", positive=True))
    elif name == "lasso":
        from sklearn.linear_model import Lasso
        est = Lasso(alpha=_float(m["alpha"], "model.alpha", positive=True),
                    max_iter=2000, random_state=seed)
    elif name == "elasticnet":
        from sklearn.linear_model import ElasticNet
        est = ElasticNet(alpha=_float(m["alpha"], "model.alpha", positive=True),
                         l1_ratio=_float(m["l1_ratio"], "model.l1_ratio"),
                         max_iter=2000, random_state=seed)
    elif name == "gbr":
        from sklearn.ensemble import GradientBoostingRegressor
        est = GradientBoostingRegressor(
            n_estimators=_int(m["n_estimators"], "model.n_estimators"),
            learning_rate=_float(m["learning_rate"], "model.learning_rate", positive=True),
            max_depth=max_depth,
            subsample=_float(m["subsample"], "model.subsample", positive=True),
            min_samples_leaf=_int(m["min_samples_leaf"], "model.min_samples_leaf"),
            max_features=_float(m["max_features"], "model.max_features", positive=True),
            random_state=seed)
    elif name == "rf":
        from sklearn.ensemble import RandomForestRegressor
        est = RandomForestRegressor(
            n_estimators=_int(m["n_estimators"], "model.n_estimators"),
            max_depth=max_depth,
            min_samples_leaf=_int(m["min_samples_leaf"], "model.min_samples_leaf"),
            max_features=_float(m["max_features"], "model.max_features", positive=True),
            n_jobs=1, random_state=seed)
    elif name == "knn":
        from sklearn.neighbors import KNeighborsRegressor
        est = KNeighborsRegressor(n_neighbors=_int(m["n_neighbors"], "model.n_neighbors"),
                                  weights=m["weights"])
    else:  # svr
        from sklearn.svm import SVR
        gamma = m["gamma"]
        if not isinstance(gamma, str):
            gamma = _float(gamma, "model.gamma", positive=True)
        est = SVR(kernel=m["kernel"], C=_float(m["C"], "model.C", positive=True),
                  epsilon=_float(m["epsilon"], "model.epsilon"), gamma=gamma)

    if _bool(fe["log_target"], "features.log_target"):
        from sklearn.compose import TransformedTargetRegressor
        est = TransformedTargetRegressor(regressor=est, func=np.log, inverse_func=np.exp)
    return make_pipeline(*steps, est) if steps else make_pipeline(est)


COLUMNS = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def load_data(data_dir: str):
    import numpy as np

    path = os.path.join(data_dir, "train.csv")
    with open(path) as f:
        header = f.readline().strip().split(",")
    if header != [*COLUMNS, "y"]:
        raise ValueError(f"{path}: unexpected columns {header}")
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return table[:, :len(COLUMNS)], table[:, len(COLUMNS)]


def check_choices(cfg: dict) -> None:
    """Cheap checks that fail fast, before scikit-learn is imported."""
    if cfg["model"]["name"] not in MODELS:
        raise ConfigError(f"model.name must be one of {list(MODELS)}, got {cfg['model']['name']!r}")
    if cfg["features"]["scaler"] not in SCALERS:
        raise ConfigError(f"features.scaler must be one of {list(SCALERS)}, "
                          f"got {cfg['features']['scaler']!r}")


def train(cfg: dict, seed: int, data_dir: str):
    """The fitted pipeline, and its R^2 on its own training rows (a sanity number, nothing more)."""
    check_choices(cfg)
    model = build_model(cfg, seed)  # validates the config before any fitting
    X, y = load_data(data_dir)
    model.fit(X, y)
    resid = y - model.predict(X)
    return model, float(1.0 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()), len(y)


def load(artifacts: str):
    """The predict entry point the evaluator calls (in a process of its own): inputs -> predictions."""
    with open(os.path.join(artifacts, "model.pkl"), "rb") as f:
        model = pickle.load(f)
    return lambda inputs: model.predict(inputs["X"])


def describe(cfg: dict) -> str:
    m, fe = cfg["model"], cfg["features"]
    keys = {
        "ridge": ["alpha"], "lasso": ["alpha"], "elasticnet": ["alpha", "l1_ratio"],
        "gbr": ["n_estimators", "learning_rate", "max_depth", "subsample",
                "min_samples_leaf", "max_features"],
        "rf": ["n_estimators", "max_depth", "min_samples_leaf", "max_features"],
        "knn": ["n_neighbors", "weights"], "svr": ["kernel", "C", "epsilon", "gamma"],
    }.get(m["name"], [])
    hp = ", ".join(f"{k}={m[k]}" for k in keys)
    feats = (f"scaler={fe['scaler']}, poly_degree={fe['poly_degree']}"
             f"{' (interactions only)' if fe['poly_degree'] != 1 and fe['interactions_only'] else ''}"
             f", log_target={fe['log_target']}")
    return f"model={m['name']}({hp}); features: {feats}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--overrides", default=None, help="JSON file: dotted key -> value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=os.environ.get("AUTOSCI_DATA", ""))
    p.add_argument("--artifacts", required=True)
    args = p.parse_args(argv)

    t0 = time.time()
    if not args.data or not os.path.isfile(os.path.join(args.data, "train.csv")):
        print(f"error: no training data in {args.data or '(no --data)'}: run the task's prepare command "
              "(python prepare.py --out DATA_DIR)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
        if args.overrides:
            with open(args.overrides) as f:
                overrides = json.load(f)
            cfg = apply_overrides(cfg, overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. lasso ConvergenceWarning; keep logs short
            model, train_r2, n = train(cfg, args.seed, args.data)
    except (ConfigError, json.JSONDecodeError) as e:
        # Bad config/overrides: exit 2.  Anything else (a bug, a fit failure) raises
        # with a traceback and exit code 1.
        print(f"config error: {e}", file=sys.stderr)
        return 2

    with open(os.path.join(args.artifacts, "model.pkl"), "wb") as f:
        pickle.dump(model, f)
    print(f"diabetes: {describe(cfg)}")
    print(f"seed={args.seed}: fit on {n} training patients, training R2 {train_r2:.4f}, {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
