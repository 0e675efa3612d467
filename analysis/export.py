"""Export each campaign's log (every table, the best-so-far curve, the lineage) as CSV, and as
Parquet when pyarrow is installed.

    python analysis/export.py CAMPAIGN [CAMPAIGN...] --out DIR   (several campaigns: DIR/<folder name>/)
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from autosci_hpc.report import CampaignData, export_log
from autosci_hpc.report.scripts import main


def table(datas: list[CampaignData], args: argparse.Namespace) -> pd.DataFrame:
    rows = []
    for data in datas:
        out = Path(args.out) / data.label if len(datas) > 1 else Path(args.out)
        rows += [{"campaign": data.label, "written": line} for line in export_log(data, out)]
    return pd.DataFrame(rows)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write into")


if __name__ == "__main__":
    sys.exit(main(__doc__, table, None, options))
