"""Per team: proposals posted, approved and rejected, finished trials, promotions, best champion delta.

    python analysis/teams.py CAMPAIGN [CAMPAIGN...] [--png out.png]   (the figure: the first campaign)
"""

import sys

from autosci_hpc.report import plots
from autosci_hpc.report.metrics import team_contributions
from autosci_hpc.report.scripts import main, per_campaign

if __name__ == "__main__":
    sys.exit(main(__doc__, per_campaign(team_contributions), lambda datas, _args: plots.team_plot(datas[0])))
