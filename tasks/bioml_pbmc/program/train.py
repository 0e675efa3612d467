"""PBMC cell-type classification: the model code agents improve.

evaluate.py (not editable) calls ``fit_predict(cfg, X_train, y_train, X_eval, seed)`` once per
validation fold and once on all development cells for the test cells. X is cells x genes
(log-normalized expression of 765 highly variable genes, float64), y holds class indices
(0..9); return one predicted class index per row of X_eval. Everything fitted (gene selection,
scaling, PCA, the classifier) must be fitted on X_train only. Raise ConfigError for a bad config
value (the run exits 2). Keep it deterministic for a seed.
"""
from __future__ import annotations

import numpy as np

MODELS = ("knn", "logreg", "svm", "rf")
CLASS_WEIGHTS = ("none", "balanced")


class ConfigError(Exception):
    pass


def _int(v, name, low, high):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
        raise ConfigError(f"{name} must be an integer, got {v!r}")
    if not low <= int(v) <= high:
        raise ConfigError(f"{name} must be {low}..{high}, got {v!r}")
    return int(v)


def _float(v, name, positive=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v!r}")
    if positive and v <= 0:
        raise ConfigError(f"{name} must be > 0, got {v!r}")
    return float(v)


def _choice(v, name, options):
    if v not in options:
        raise ConfigError(f"{name} must be one of {list(options)}, got {v!r}")
    return v


def preprocess(cfg: dict, X_train, X_eval, seed: int):
    """Gene selection, scaling and PCA, fitted on the training cells."""
    pp = cfg["preprocess"]
    n_genes = _int(pp["n_genes"], "preprocess.n_genes", 10, X_train.shape[1])
    if n_genes < X_train.shape[1]:  # the most variable genes of the training cells
        keep = np.sort(np.argsort(-X_train.var(axis=0), kind="stable")[:n_genes])
        X_train, X_eval = X_train[:, keep], X_eval[:, keep]
    if not isinstance(pp["scale"], bool):
        raise ConfigError(f"preprocess.scale must be true or false, got {pp['scale']!r}")
    if pp["scale"]:  # z-score each gene, clipped like scanpy's sc.pp.scale(max_value=...)
        mean, sd = X_train.mean(axis=0), X_train.std(axis=0)
        sd[sd == 0] = 1.0
        clip = _float(pp["max_value"], "preprocess.max_value", positive=True)
        X_train = np.clip((X_train - mean) / sd, -clip, clip)
        X_eval = np.clip((X_eval - mean) / sd, -clip, clip)
    n_pcs = _int(pp["n_pcs"], "preprocess.n_pcs", 0, 200)
    if n_pcs:
        from sklearn.decomposition import PCA
        pca = PCA(n_components=min(n_pcs, X_train.shape[1], X_train.shape[0] - 1),
                  svd_solver="full", random_state=seed).fit(X_train)
        X_train, X_eval = pca.transform(X_train), pca.transform(X_eval)
    return X_train, X_eval


def build_model(cfg: dict, seed: int):
    m = cfg["model"]
    name = _choice(m["name"], "model.name", MODELS)
    cw = _choice(m["class_weight"], "model.class_weight", CLASS_WEIGHTS)
    class_weight = None if cw == "none" else cw
    if name == "knn":
        from sklearn.neighbors import KNeighborsClassifier
        return KNeighborsClassifier(n_neighbors=_int(m["n_neighbors"], "model.n_neighbors", 1, 200),
                                    weights=_choice(m["weights"], "model.weights", ("uniform", "distance")))
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        return LogisticRegression(C=_float(m["C"], "model.C", positive=True), class_weight=class_weight,
                                  max_iter=3000)
    if name == "svm":
        from sklearn.svm import SVC
        return SVC(C=_float(m["C"], "model.C", positive=True), kernel="rbf", gamma="scale",
                   class_weight=class_weight, random_state=seed)
    from sklearn.ensemble import RandomForestClassifier
    return RandomForestClassifier(n_estimators=_int(m["n_estimators"], "model.n_estimators", 10, 2000),
                                  class_weight=class_weight, n_jobs=1, random_state=seed)


def fit_predict(cfg: dict, X_train, y_train, X_eval, seed: int):
    model = build_model(cfg, seed)  # validates the model keys before any work
    Z_train, Z_eval = preprocess(cfg, X_train, X_eval, seed)
    return model.fit(Z_train, y_train).predict(Z_eval).astype(np.int64)


def describe(cfg: dict) -> str:
    pp, m = cfg["preprocess"], cfg["model"]
    keys = {"knn": ["n_neighbors", "weights"], "logreg": ["C", "class_weight"],
            "svm": ["C", "class_weight"], "rf": ["n_estimators", "class_weight"]}.get(m["name"], [])
    hp = ", ".join(f"{k}={m[k]}" for k in keys)
    return (f"genes={pp['n_genes']}, scale={pp['scale']}, pcs={pp['n_pcs']} -> {m['name']}({hp})")
