"""The report's figures, as PNG bytes.

Matplotlib's object API (`Figure`, no pyplot): no global backend or figure registry, so building a
report never opens a window, needs no display, and leaks no figures in a long-lived process.
Every function draws real data or returns None, so a report never shows an empty frame.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import metrics
from .load import CampaignData

#: One colour per coordination mode, so curves of the same mode read as one family.
MODE_COLOURS = {"decentralized": "#1f77b4", "single": "#ff7f0e", "central": "#2ca02c", "random": "#7f7f7f"}
EXTRA_COLOURS = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def mode_colour(mode: str, modes: Sequence[str] = ()) -> str:
    if mode in MODE_COLOURS:
        return MODE_COLOURS[mode]
    others = sorted(m for m in set(modes) | {mode} if m not in MODE_COLOURS)
    return EXTRA_COLOURS[others.index(mode) % len(EXTRA_COLOURS)]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" text chunk: it would carry matplotlib's web address into the report.
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float = 7.5, height: float = 4.0) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height))
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _wrap(label: str, width: int = 28) -> str:
    return "\n".join(textwrap.wrap(label, width)[:3]) or label


def best_so_far_plot(datas: Sequence[CampaignData], target: Optional[float],
                     x: str = "trial_n") -> Optional[bytes]:
    """The champion in force against the trials spent (x="trial_n") or GPU-hours (x="gpu_hours"):
    one step line per campaign coloured by mode, promotions marked, the target dashed."""
    curves = [(d, metrics.best_so_far(d)) for d in datas]
    if not any(c["best"].notna().any() for _, c in curves):
        return None
    fig, ax = _figure()
    modes = [d.arm for d in datas]
    labelled: set[str] = set()
    for data, curve in curves:
        colour = mode_colour(data.arm, modes)
        label = data.label if len(datas) <= 6 else (data.arm if data.arm not in labelled else None)
        labelled.add(data.arm)
        ax.plot(curve[x], curve["best"], drawstyle="steps-post", color=colour, linewidth=1.8, label=label,
                alpha=0.9 if len(datas) <= 6 else 0.6)
        jumps = curve[curve["best"].ne(curve["best"].shift()) & curve["best"].notna()]
        ax.plot(jumps[x], jumps["best"], "o", color=colour, markersize=5)
    if target is not None and not math.isnan(target):
        ax.axhline(target, linestyle="--", color="#444444", linewidth=1.2, label=f"target {target:.4g}")
    compute = metrics.compute_unit(datas[0])
    ax.set_xlabel("finished trials" if x == "trial_n" else compute)
    first = datas[0]
    ax.set_ylabel(f"best {first.metric} ({first.direction})")
    ax.set_title(f"champion {first.metric} vs {'trials' if x == 'trial_n' else 'compute'}")
    ax.legend(fontsize=8, loc="lower right" if first.maximize else "upper right")
    return _png(fig)


def trials_to_target_plot(per_campaign: pd.DataFrame, per_mode: pd.DataFrame) -> Optional[bytes]:
    """Median trials to target per mode (bar), min-max (whisker), each campaign a dot; campaigns
    that never reached the target are drawn hollow at their censored value (trials used + 1)."""
    if len(per_campaign) < 2:
        return None
    fig, ax = _figure(6.5, 3.8)
    modes = list(per_mode["mode"])
    for i, row in per_mode.reset_index(drop=True).iterrows():
        pos = int(str(i))
        colour = mode_colour(str(row["mode"]), modes)
        ax.bar(pos, row["ttt_median"], color=colour, alpha=0.55, width=0.6)
        spread = [[row["ttt_median"] - row["ttt_min"]], [row["ttt_max"] - row["ttt_median"]]]
        ax.errorbar(pos, row["ttt_median"], yerr=spread, color="#222222", capsize=6)
        mine = per_campaign[per_campaign["mode"] == row["mode"]]
        for j, (_, c) in enumerate(mine.iterrows()):
            reached = bool(c["reached"])
            value = float(c["trials_to_target"]) if reached else float(c["trials_used"]) + 1
            offset = (j - (len(mine) - 1) / 2) * 0.08
            ax.plot(pos + offset, value, "o", markersize=6, markeredgecolor=colour,
                    markerfacecolor=colour if reached else "white")
    ax.set_xticks(range(len(modes)), [f"{m}\n(n={n})" for m, n in zip(modes, per_mode["campaigns"])])
    ax.set_ylabel("trials to target")
    ax.set_title("trials to target by mode (hollow: never reached)")
    return _png(fig)


def _barh(labels: list[str], values: list[float], title: str, xlabel: str, colour: str) -> bytes:
    fig, ax = _figure(7.0, 0.6 + 0.5 * max(2, len(labels)))
    positions = list(range(len(labels)))
    ax.barh(positions, values, color=colour)
    ax.set_yticks(positions, [_wrap(label) for label in labels], fontsize=8)
    ax.invert_yaxis()
    for pos, value in zip(positions, values):
        ax.annotate(f"{value:g}", (value, pos), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(fig)


def failure_plot(data: CampaignData) -> Optional[bytes]:
    table = metrics.failure_classes(data)
    if table.empty:
        return None
    return _barh(list(table["failure_class"]), [float(v) for v in table["trials"]], "failed trials by class",
                 "trials", "#d62728")


def dead_end_plot(data: CampaignData) -> Optional[bytes]:
    table = metrics.dead_ends_by_reason(data)
    if table.empty:
        return None
    return _barh(list(table["reason"]), [float(v) for v in table["dead_ends"]], "dead ends by reason",
                 "directions registered", "#7f7f7f")


def rejection_plot(data: CampaignData) -> Optional[bytes]:
    table = metrics.rejections(data)
    if table.empty:
        return None
    return _barh(list(table["kind"]), [float(v) for v in table["proposals"]],
                 "proposals rejected before compute", "proposals", "#9467bd")


def spend_plot(data: CampaignData) -> Optional[bytes]:
    table = metrics.llm_spend(data)
    if table.empty or float(table["cost_usd"].sum()) <= 0 and int(table["calls"].sum()) == 0:
        return None
    labels = [f"{r} / {t}" for r, t in zip(table["role"], table["team"])]
    return _barh(labels, [round(float(v), 4) for v in table["cost_usd"]], "LLM spend by role / team", "USD",
                 "#8c564b")


def team_plot(data: CampaignData) -> Optional[bytes]:
    """Grouped bars per team: proposals, approved, rejected, finished trials, promotions."""
    table = metrics.team_contributions(data)
    if table.empty:
        return None
    fig, ax = _figure(7.5, 3.8)
    series = ["proposals", "approved", "rejected", "trials", "promotions"]
    colours = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#d62728"]
    width = 0.8 / len(series)
    for k, (name, colour) in enumerate(zip(series, colours)):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(table))]
        ax.bar(xs, table[name].astype(float), width=width, color=colour, label=name)
    ax.set_xticks(range(len(table)), list(table["team"]))
    ax.set_title("contributions by team")
    ax.legend(fontsize=8, ncols=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    return _png(fig)


def campaign_plots(data: CampaignData, target: Optional[float]) -> dict[str, bytes]:
    """The figures of one campaign's story, by name, in the order the report shows them; figures
    with nothing to draw (no failures, no LLM calls) are left out."""
    made = {
        "best_so_far_trials": best_so_far_plot([data], target, "trial_n"),
        "best_so_far_gpu_hours": best_so_far_plot([data], target, "gpu_hours"),
        "teams": team_plot(data),
        "rejections": rejection_plot(data),
        "dead_ends": dead_end_plot(data),
        "failures": failure_plot(data),
        "llm_spend": spend_plot(data),
    }
    return {name: png for name, png in made.items() if png is not None}


def comparison_plots(datas: Sequence[CampaignData], target: Optional[float], per_campaign: pd.DataFrame,
                     per_mode: pd.DataFrame) -> dict[str, bytes]:
    """The comparison's figures (several campaigns): both curves and the trials-to-target bars."""
    made = {
        "compare_trials": best_so_far_plot(datas, target, "trial_n"),
        "compare_gpu_hours": best_so_far_plot(datas, target, "gpu_hours"),
        "trials_to_target": trials_to_target_plot(per_campaign, per_mode),
    }
    return {name: png for name, png in made.items() if png is not None}


def save_plots(plots: dict[str, bytes], folder: Path, prefix: str = "") -> list[Path]:
    """Write each figure as `<folder>/<prefix><name>.png`; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, png in plots.items():
        path = folder / f"{prefix}{name}.png"
        path.write_bytes(png)
        written.append(path)
    return written
