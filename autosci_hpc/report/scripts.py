"""The shared command line of the `analysis/` scripts: campaign folders in, a printed table out,
optionally a PNG. Each script is then a few lines naming its table and figure, so no analysis logic
lives outside this package."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import pandas as pd

from . import metrics
from .load import CampaignData, ReportError, load_campaign

Tables = Union[pd.DataFrame, list[tuple[str, pd.DataFrame]]]
TableFn = Callable[[list[CampaignData], argparse.Namespace], Tables]
PlotFn = Callable[[list[CampaignData], argparse.Namespace], Optional[bytes]]


def per_campaign(fn: Callable[[CampaignData], pd.DataFrame]) -> TableFn:
    """A table of one campaign, for several: the rows of each, with a leading `campaign` column."""
    def table(datas: list[CampaignData], _args: argparse.Namespace) -> pd.DataFrame:
        frames = [fn(d).assign(campaign=d.label) for d in datas]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return frame[["campaign"] + [c for c in frame.columns if c != "campaign"]]
    return table


def target_of(datas: list[CampaignData], args: argparse.Namespace) -> float:
    """`--target` when given, else the default target of these campaigns."""
    given = getattr(args, "target", None)
    return float(given) if given is not None else metrics.default_target(datas)


def render(tables: Tables) -> str:
    items = [("", tables)] if isinstance(tables, pd.DataFrame) else tables
    out = []
    for title, frame in items:
        if title:
            out.append(f"## {title}")
        out.append(frame.to_string(index=False, max_colwidth=70) if len(frame) else "(no rows)")
    return "\n".join(out)


def main(description: str, table: TableFn, plot: Optional[PlotFn] = None,
         options: Optional[Callable[[argparse.ArgumentParser], None]] = None,
         argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("campaigns", nargs="+", metavar="CAMPAIGN", help="campaign folder(s)")
    if plot is not None:
        parser.add_argument("--png", metavar="FILE", help="also draw the figure into this PNG file")
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    try:
        datas = [load_campaign(Path(folder)) for folder in args.campaigns]
        print(render(table(datas, args)))
        if plot is not None and args.png:
            png = plot(datas, args)
            if png is None:
                print(f"(nothing to draw: {args.png} not written)")
            else:
                Path(args.png).write_bytes(png)
                print(f"figure: {args.png}")
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def describe_target(datas: list[CampaignData], args: argparse.Namespace) -> str:
    target = target_of(datas, args)
    origin = "given with --target" if getattr(args, "target", None) is not None else "default: half-way " \
        "from the first campaign's baseline to the best final champion"
    shown = "—" if math.isnan(target) else f"{target:.6g}"
    return f"target {datas[0].metric} {'>=' if datas[0].maximize else '<='} {shown} ({origin})"
