"""LLM spend by role and team (calls, errors, tokens, dollars).

    python analysis/llm_spend.py CAMPAIGN [CAMPAIGN...] [--png out.png]   (the figure: the first campaign)
"""

import sys

from autosci_hpc.report import plots
from autosci_hpc.report.metrics import llm_spend
from autosci_hpc.report.scripts import main, per_campaign

if __name__ == "__main__":
    sys.exit(main(__doc__, per_campaign(llm_spend), lambda datas, _args: plots.spend_plot(datas[0])))
