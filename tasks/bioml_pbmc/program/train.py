"""PBMC cell-type classification: the model code agents improve.

run.py (not editable) calls ``fit(cfg, X_train, y_train, seed)`` in the training step and pickles
the model it returns; the sealed evaluator later calls the model's ``predict(X)`` in a process of
its own for the cells it scores. X is cells x genes (log-normalized expression of 765 highly
variable genes, float64), y holds class indices (0..9); predict returns one class index per row.
The model must be picklable (a scikit-learn estimator, or an object defined in this file). Raise
ConfigError for a bad config value (the run exits 2). Keep it deterministic for a seed.
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


class Preprocess:
    """Gene selection, scaling and PCA, as fitted on the training cells."""

    def __init__(self, keep, mean, sd, clip, pca):
        self.keep, self.mean, self.sd, self.clip, self.pca = keep, mean, sd, clip, pca

    def transform(self, X):
        if self.keep is not None:
            X = X[:, self.keep]
        if self.mean is not None:
            X = np.clip((X - self.mean) / self.sd, -self.clip, self.clip)
        if self.pca is not None:
            X = self.pca.transform(X)
        return X


def fit_preprocess(cfg: dict, X_train, seed: int) -> Preprocess:
    """Gene selection, scaling and PCA, fitted on the training cells."""
    pp = cfg["preprocess"]
    n_genes = _int(pp["n_genes"], "preprocess.n_genes", 10, X_train.shape[1])
    keep = mean = sd = pca = None
    clip = 0.0
    if n_genes < X_train.shape[1]:  # the most variable genes of the training cells
        keep = np.sort(np.argsort(-X_train.var(axis=0), kind="stable")[:n_genes])
        X_train = X_train[:, keep]
    if not isinstance(pp["scale"], bool):
        raise ConfigError(f"preprocess.scale must be true or false, got {pp['scale']!r}")
    if pp["scale"]:  # z-score each gene, clipped like scanpy's sc.pp.scale(max_value=...)
        mean, sd = X_train.mean(axis=0), X_train.std(axis=0)
        sd[sd == 0] = 1.0
        clip = _float(pp["max_value"], "preprocess.max_value", positive=True)
        X_train = np.clip((X_train - mean) / sd, -clip, clip)
    n_pcs = _int(pp["n_pcs"], "preprocess.n_pcs", 0, 200)
    if n_pcs:
        from sklearn.decomposition import PCA
        pca = PCA(n_components=min(n_pcs, X_train.shape[1], X_train.shape[0] - 1),
                  svd_solver="full", random_state=seed).fit(X_train)
    return Preprocess(keep, mean, sd, clip, pca)


class Model:
    def __init__(self, preprocess, classifier):
        self.preprocess, self.classifier = preprocess, classifier

    def predict(self, X):
        return self.classifier.predict(self.preprocess.transform(X)).astype(np.int64)


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


def fit(cfg: dict, X_train, y_train, seed: int) -> Model:
    classifier = build_model(cfg, seed)  # validates the model keys before any work
    preprocess = fit_preprocess(cfg, X_train, seed)
    classifier.fit(preprocess.transform(X_train), y_train)
    return Model(preprocess, classifier)


def describe(cfg: dict) -> str:
    pp, m = cfg["preprocess"], cfg["model"]
    keys = {"knn": ["n_neighbors", "weights"], "logreg": ["C", "class_weight"],
            "svm": ["C", "class_weight"], "rf": ["n_estimators", "class_weight"]}.get(m["name"], [])
    hp = ", ".join(f"{k}={m[k]}" for k in keys)
    return (f"genes={pp['n_genes']}, scale={pp['scale']}, pcs={pp['n_pcs']} -> {m['name']}({hp})")
