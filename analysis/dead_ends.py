"""Registered dead ends by reason, with the directions they close.

    python analysis/dead_ends.py CAMPAIGN [CAMPAIGN...] [--png out.png]   (the figure: the first campaign)
"""

import sys

from autosci_hpc.report import plots
from autosci_hpc.report.metrics import dead_ends_by_reason
from autosci_hpc.report.scripts import main, per_campaign

if __name__ == "__main__":
    sys.exit(main(__doc__, per_campaign(dead_ends_by_reason),
                  lambda datas, _args: plots.dead_end_plot(datas[0])))
