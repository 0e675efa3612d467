"""Each champion in promotion order: what changed against the previous one, per-seed metrics, mean,
std, delta, rule, and the proposal and team it came from.

    python analysis/lineage.py CAMPAIGN [CAMPAIGN...] [--png out.png]
    (the figure: best so far, each promotion a dot)
"""

import sys

from autosci_hpc.report import plots
from autosci_hpc.report.metrics import lineage
from autosci_hpc.report.scripts import main, per_campaign

if __name__ == "__main__":
    sys.exit(main(__doc__, per_campaign(lineage), lambda datas, _args: plots.best_so_far_plot(datas, None)))
