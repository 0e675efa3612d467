"""Reading campaigns after (or while) they run: load a campaign read-only, compute its numbers,
draw them, write one self-contained HTML report, export the log.

`load_campaign` -> `CampaignData` (pandas frames); `metrics` holds the definitions shared with
`autosci compare` and the benchmarks; `write_report` is `autosci report`.
"""

from .export import export_log
from .html import render_report, write_report
from .load import CampaignData, ReportError, load_campaign
from .metrics import (accepted_improvements, best_so_far, compare_table, default_target, gpu_hours_to_target,
                      trials_to_target)

__all__ = ["CampaignData", "ReportError", "accepted_improvements", "best_so_far", "compare_table",
           "default_target", "export_log", "gpu_hours_to_target", "load_campaign", "render_report",
           "trials_to_target", "write_report"]
