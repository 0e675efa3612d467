"""The champion metric in force after each finished trial, with cumulative GPU-hours.

    python analysis/best_so_far.py CAMPAIGN [CAMPAIGN...] [--png out.png] [--x gpu_hours] [--target X]
"""

import argparse
import sys

from autosci_hpc.report import best_so_far, plots
from autosci_hpc.report.scripts import main, per_campaign, target_of


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--x", choices=["trial_n", "gpu_hours"], default="trial_n", help="figure x axis")
    parser.add_argument("--target", type=float, help="the dashed line (default: the default target)")


if __name__ == "__main__":
    sys.exit(main(__doc__, per_campaign(best_so_far),
                  lambda datas, args: plots.best_so_far_plot(datas, target_of(datas, args), args.x),
                  options))
