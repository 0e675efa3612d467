"""Failed trials by failure class (and how many the infrastructure retried).

    python analysis/failures.py CAMPAIGN [CAMPAIGN...] [--png out.png]   (the figure: the first campaign)
"""

import sys

from autosci_hpc.report import plots
from autosci_hpc.report.metrics import failure_classes
from autosci_hpc.report.scripts import main, per_campaign

if __name__ == "__main__":
    sys.exit(main(__doc__, per_campaign(failure_classes), lambda datas, _args: plots.failure_plot(datas[0])))
