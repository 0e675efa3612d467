"""Trials (and GPU-hours) each campaign needed to reach the target, per campaign and per mode.

    python analysis/trials_to_target.py CAMPAIGN [CAMPAIGN...] [--target X] [--png out.png]
"""

import argparse
import sys
from typing import Optional

from autosci_hpc.report import CampaignData, compare_table, plots
from autosci_hpc.report.scripts import Tables, describe_target, main, target_of


def table(datas: list[CampaignData], args: argparse.Namespace) -> Tables:
    per_campaign, per_mode = compare_table(datas, target_of(datas, args))
    return [(describe_target(datas, args), per_campaign), ("per mode", per_mode)]


def figure(datas: list[CampaignData], args: argparse.Namespace) -> Optional[bytes]:
    target = target_of(datas, args)
    if len(datas) > 1:
        return plots.trials_to_target_plot(*compare_table(datas, target))
    return plots.best_so_far_plot(datas, target)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=float,
                        help="metric target (default: half-way from the baseline to the best final champion)")


if __name__ == "__main__":
    sys.exit(main(__doc__, table, figure, options))
