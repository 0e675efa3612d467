"""One self-contained HTML file telling a campaign's story (or comparing several campaigns).

Self-contained because it is read on a laptop after `scp`: figures are PNG data URIs, the style is
inline, there is no script and no external URL, so it opens from disk with no server and no network.
Every string from the database is escaped: proposals, critiques and model cards are written by
agents (an LLM may echo anything, markup included). Nothing from the API key file is ever read.
"""

from __future__ import annotations

import base64
import html
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import pandas as pd

from ..coordination.promotion import interval_text
from ..state.lifecycle import PostKind
from . import metrics, plots
from .load import CampaignData, load_campaign

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:1.2em;color:#1d1d1f;background:#fff;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{margin-top:1.3em}table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #d0d0d0;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f4f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:.7em;margin:.8em 0}.card{border:1px solid #d0d0d0;border-radius:6px;
padding:.5em .9em;min-width:9em}.card b{display:block;font-size:1.35em}.card span{color:#555;font-size:.82em}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:.7em;white-space:pre-wrap;font-size:.82em}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}.figs{display:flex;flex-wrap:wrap;gap:.6em}
.figs img{max-width:49%}.muted{color:#666}.good{color:#1a7f37}.bad{color:#b42318}
details{border:1px solid #ddd;border-radius:6px;padding:.3em .9em;margin:.8em 0}
summary{cursor:pointer;font-weight:600;font-size:1.1em}
.post{border-left:3px solid #ccc;padding-left:.7em;margin:.6em 0}
"""

#: Forum kinds worth showing a reader: decisions and turning points, not every critique.
HIGHLIGHT_KINDS = (PostKind.PROMOTION, PostKind.DISCUSSION, PostKind.ROSTER, PostKind.DEAD_END,
                   PostKind.FAILURE, PostKind.ANALYSIS)
HIGHLIGHTS = 14


def write_report(folders: Sequence[Union[str, Path]], out: Path, target: Optional[float] = None) -> Path:
    """Load the campaigns (read-only) and write the report to `out`; returns `out`.

    With one folder: that campaign's story. With several: first a side-by-side comparison (per
    campaign and per mode, trials to target, accepted improvements), then each campaign's story.
    `target` defaults to `metrics.default_target` of the campaigns.
    """
    datas = [load_campaign(Path(f)) for f in folders]
    text = render_report(datas, target)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    partial.replace(out)  # a reader (or a browser reloading) never sees half a file
    return out


def render_report(datas: Sequence[CampaignData], target: Optional[float] = None) -> str:
    default = target is None
    chosen = metrics.default_target(datas) if target is None else float(target)
    note = _target_note(datas, chosen, default)
    title = datas[0].label if len(datas) == 1 else f"{len(datas)} campaigns on {datas[0].task_name}"
    parts = [f"<h1>autosci report: {_e(title)}</h1>",
             f"<p class='muted'>generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from the campaign "
             f"database{'s' if len(datas) > 1 else ''}, read-only</p>"]
    if len(datas) > 1:
        parts.append(_comparison(datas, chosen, note))
        for data in datas:
            parts.append(f"<details><summary>{_e(data.label)} — {_e(data.arm)}, "
                         f"seed {metrics.campaign_seed(data)}</summary>"
                         f"{_campaign(data, chosen, note, level=3)}</details>")
    else:
        parts.append(_campaign(datas[0], chosen, note, level=2))
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>autosci report: {_e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


# ---- formatting helpers -------------------------------------------------------------------------


def _e(value: Any) -> str:
    """Escaped text of any value: the only way database text reaches the page."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any, digits: int = 4) -> str:
    if value is None or value is pd.NA:
        return "—"
    if isinstance(value, pd.Timestamp):
        return "—" if pd.isna(value) else f"{value:%Y-%m-%d %H:%M:%S} UTC"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _cell(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return f"<td>{value:%Y-%m-%d %H:%M:%S}</td>" if not pd.isna(value) else "<td>—</td>"
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "<td class='n'>—</td>"
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        return f"<td class='n'>{_e(_num(value.item() if hasattr(value, 'item') else value))}</td>"
    return f"<td>{_e(value)}</td>"


def _table(frame: pd.DataFrame, columns: Optional[dict[str, str]] = None,
           cells: Optional[dict[str, Callable[[Any], str]]] = None) -> str:
    """An HTML table of `frame`; `columns` maps column -> header (and picks and orders them),
    `cells` overrides how a column's values are written (already escaped HTML)."""
    columns = columns or {c: c for c in frame.columns}
    cells = cells or {}
    head = "".join(f"<th>{_e(h)}</th>" for h in columns.values())
    body = []
    for _, row in frame.iterrows():
        body.append("<tr>" + "".join(f"<td>{cells[c](row[c])}</td>" if c in cells else _cell(row[c])
                                     for c in columns) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: Optional[bytes], alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{_e(alt)}'>"


def _cards(items: list[tuple[str, str]]) -> str:
    return "<div class='cards'>" + "".join(f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                           for k, v in items) + "</div>"


def _target_note(datas: Sequence[CampaignData], target: float, default: bool) -> str:
    first = datas[0]
    what = f"{first.metric} {'≥' if first.maximize else '≤'} {_num(target)}"
    if not default:
        return f"Target: {what} (given with --target)."
    baseline = metrics.baseline_metric(first)
    finals = [metrics.final_metric(d) for d in datas]
    finals = [f for f in finals if not math.isnan(f)]
    best = (max(finals) if first.maximize else min(finals)) if finals else math.nan
    return (f"Target: {what}. This is the default: the baseline ({_num(baseline)}, the first campaign's "
            f"baseline champion) plus half the way to the best final champion of the campaigns in this "
            f"report ({_num(best)}); `autosci report --target X` overrides it.")


# ---- the comparison -----------------------------------------------------------------------------


def _comparison(datas: Sequence[CampaignData], target: float, note: str) -> str:
    per_campaign, per_mode = metrics.compare_table(datas, target)
    figures = plots.comparison_plots(datas, target, per_campaign, per_mode)
    lines = []
    for _, row in per_campaign.iterrows():
        if row["reached"]:
            reached = (f"reached the target after <b>{int(row['trials_to_target'])}</b> of "
                       f"{int(row['trials_used'])} trials ({_num(row['gpu_hours_to_target'], 3)} GPU-hours)")
        else:
            reached = (f"<span class='bad'>did not reach the target</span> in {int(row['trials_used'])} "
                       f"trials (counted as {int(row['trials_used']) + 1}, censored)")
        lines.append(f"<li>{_e(row['campaign'])} ({_e(row['mode'])}, seed {int(row['seed'])}): {reached}; "
                     f"<b>{int(row['accepted_improvements'])}</b> accepted improvement(s); final "
                     f"{_e(datas[0].metric)} {_num(row['final_metric'])} "
                     f"(95% CI {_e(row['final_ci95'])})</li>")
    ratios = []
    reference = per_mode[per_mode["mode"] == metrics.REFERENCE_MODE]
    for _, row in per_mode.iterrows():
        if row["mode"] == metrics.REFERENCE_MODE or reference.empty:
            continue
        ref = reference.iloc[0]
        ratio = _num(row["ttt_ratio_vs_decentralized"], 3)
        ratios.append(f"<li><b>{_e(row['mode'])}</b> needed <b>{ratio}×</b> the trials of decentralized to "
                      f"reach the target (median {_num(row['ttt_median'])} vs "
                      f"{_num(ref['ttt_median'])}); accepted improvements (median): "
                      f"<b>{_e(row['improvements_vs_decentralized'])}</b></li>")
    if reference.empty:
        ratios.append("<li class='muted'>no decentralized campaign here, so no ratio against it</li>")
    per_campaign_view = per_campaign.assign(trials_to_target=[
        int(v) if not pd.isna(v) else f"not reached (censored at {int(u) + 1})"
        for v, u in zip(per_campaign["trials_to_target"], per_campaign["trials_used"])])
    return (
        "<h2>Comparison</h2>"
        f"<p>{_e(note)}</p>"
        f"<ul>{''.join(lines)}</ul>"
        "<h3>Per mode</h3>"
        "<p class='muted'>Trials to target: a campaign that never reached it counts as its trials used + 1 "
        "(censored, flagged). Ratio: the mode's median trials to target over the decentralized median.</p>"
        + _table(per_mode, {"mode": "mode", "campaigns": "campaigns", "reached": "reached",
                            "censored": "censored", "ttt_median": "trials to target (median)",
                            "ttt_min": "min", "ttt_max": "max",
                            "ttt_ratio_vs_decentralized": "× decentralized",
                            "improvements_median": "accepted improvements (median)",
                            "improvements_vs_decentralized": "improvements vs decentralized",
                            "final_mean": f"final {datas[0].metric} (mean over campaigns)",
                            "final_ci95": "95% CI of that mean"})
        + f"<ul>{''.join(ratios)}</ul>"
        "<h3>Per campaign</h3>"
        + _table(per_campaign_view, {"campaign": "campaign", "mode": "mode", "seed": "seed",
                                     "trials_used": "trials used", "trials_to_target": "trials to target",
                                     "gpu_hours_to_target": "GPU-hours to target",
                                     "accepted_improvements": "accepted improvements",
                                     "final_metric": f"final {datas[0].metric}",
                                     "final_ci95": "95% CI (final champion's seeds)"})
        + "<div class='figs'>" + "".join(_img(png, name) for name, png in figures.items()) + "</div>"
    )


# ---- one campaign -------------------------------------------------------------------------------


def _h(level: int, text: str) -> str:
    return f"<h{level}>{_e(text)}</h{level}>"


def _campaign(data: CampaignData, target: float, note: str, level: int) -> str:
    sub = level + 1
    figures = plots.campaign_plots(data, target)
    return "\n".join([
        _header(data, target, level),
        f"<p>{_e(note)}</p>",
        _champion(data, sub),
        _h(sub, "Progress"),
        "<div class='figs'>" + _img(figures.get("best_so_far_trials"), "best so far vs trials")
        + _img(figures.get("best_so_far_gpu_hours"), "best so far vs GPU-hours") + "</div>",
        _lineage(data, sub),
        _teams(data, sub, figures),
        _rejections(data, sub, figures),
        _dead_ends(data, sub, figures),
        _failures(data, sub, figures),
        _costs(data, sub, figures),
        _forum(data, sub),
    ])


def _header(data: CampaignData, target: float, level: int) -> str:
    s = metrics.summarize(data)
    budget = data.config.get("budget") or {}
    n = metrics.trials_to_target(data, target)
    hours = metrics.gpu_hours_to_target(data, target)
    llm = f"${s.llm_usd:.4f} ({s.llm_calls} calls)"
    if budget.get("llm_dollars"):
        llm += f" of ${budget['llm_dollars']:g}"
    gpu = f"{s.gpu_hours:.3g}" + (f" of {budget['gpu_hours']:g}" if budget.get("gpu_hours") else "")
    wall = f"{s.wall_clock_min:.1f} of {budget.get('wall_clock_min', '?')} min"
    mode = data.mode + (" (random-search baseline)" if data.arm == "random" else "")
    rows = [("campaign", data.name), ("folder", str(data.folder)), ("task", data.task_name),
            ("metric", f"{data.metric} ({data.direction})"), ("mode", mode), ("status", data.status),
            ("sandbox", _sandbox(data)),
            ("seed", str(metrics.campaign_seed(data))),
            ("started", _num(data.campaign.get("created_at"))),
            ("finished", _num(data.campaign.get("finished_at"))),
            ("coordinator restarts", _num(data.campaign.get("restarts"))),
            ("trials", f"{s.trials_finished} finished of a budget of {s.trials_budget} "
                       f"({s.trials_failed} failed)"),
            (metrics.compute_unit(data), gpu),
            ("wall clock", wall), ("LLM spend", llm)]
    # The description's first paragraph: what the task is, without its instructions to agents.
    description = [" ".join(data.task_description.strip().split("\n\n")[0].split())] \
        if data.task_description.strip() else []
    cards = [("baseline", _num(s.baseline)), ("champion now", _num(s.final)),
             ("accepted improvements", str(s.accepted_improvements)),
             ("trials to target", str(n) if n is not None else "not reached"),
             (metrics.compute_unit(data, "") + " to target",
              _num(hours, 3) if hours is not None else "—"),
             ("rejected before compute", str(s.rejected_before_compute)),
             ("duplicates caught", str(s.duplicates)),
             ("dead ends", str(s.dead_ends))]
    return (_h(level, f"Campaign {data.label}")
            + (f"<p class='muted'>{_e(description[0])}</p>" if description else "")
            + "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"
            + _cards(cards))


def _champion(data: CampaignData, level: int) -> str:
    champions = metrics.champions_in_order(data)
    if champions.empty:
        return _h(level, "Champion") + "<p class='bad'>No champion: the baseline never finished.</p>"
    c = champions.iloc[-1]
    seeds = ", ".join(f"seed {k}: {float(v):.4g}" for k, v in sorted((c["seed_metrics"] or {}).items()))
    return (_h(level, f"Champion #{int(c['id'])}")
            + f"<p><b>{_e(data.metric)} "
            f"{_e(interval_text(float(c['metric_mean']), float(c['metric_std']), len(c['seed_metrics'] or {})))}"
            f"</b> ({_e(seeds)}), promoted by rule <code>{_e(c['rule'])}</code>; overrides "
            f"<code>{_e(c['overrides'])}</code></p>"
            + _conditions_flags(champions)
            + _h(level + 1, "Model card") + f"<pre>{_e(c['model_card'] or '(none)')}</pre>")


def _conditions_flags(champions: Any) -> str:
    """A warning for every promotion decided on a comparison across different run conditions (host,
    GPU, trials sharing the slot): on a metric that depends on time or hardware, such a gain is suspect."""
    flagged = []
    for _, row in champions.iterrows():
        detail = row.get("rule_detail") if hasattr(row, "get") else None
        why = detail.get("conditions_differ") if isinstance(detail, dict) else None
        if why:
            flagged.append(f"champion #{int(row['id'])}: {why}")
    if not flagged:
        return ""
    return ("<p class='bad'>Compared across different run conditions (the two sides of the comparison ran on "
            "other hosts or GPUs, or with other trials sharing the slot): "
            + "; ".join(_e(f) for f in flagged) + "</p>")


def _lineage(data: CampaignData, level: int) -> str:
    table = metrics.lineage(data)
    return (_h(level, "Lineage of champions")
            + "<p class='muted'>Each champion, what changed against the one before, its per-seed metrics and "
              "the proposal and team it came from; 'from trial' is the first finished trial it was in force "
              "for.</p>"
            + _table(table, {"champion": "#", "promoted_at": "promoted (UTC)", "trial_n": "from trial",
                             "change": "change vs previous", "seed_metrics": "per-seed", "mean": "mean",
                             "std": "std", "delta": "delta", "rule": "rule", "proposal": "proposal",
                             "title": "title", "team": "team"}))


def _teams(data: CampaignData, level: int, figures: dict[str, bytes]) -> str:
    parts = [_h(level, "Teams")]
    if data.teams.empty:
        parts.append("<p class='muted'>No team was formed.</p>")
    for _, team in data.teams.iterrows():
        roster = ", ".join(str(r) for r in (team["roster"] or []))
        parts.append(f"<p><b>{_e(team['name'])}</b> ({_e(team['status'])}, "
                     f"focus <code>{_e(team['focus'])}</code>, "
                     f"re-opened {_num(team['reopened'])}×): {_e(team['hypothesis'])}<br>"
                     f"<span class='muted'>roster: {_e(roster)}</span></p>")
    parts.append(_table(metrics.team_contributions(data)))
    parts.append(_img(figures.get("teams"), "contributions by team"))
    return "".join(parts)


def _rejections(data: CampaignData, level: int, figures: dict[str, bytes]) -> str:
    table = metrics.rejections(data)
    if table.empty:
        return _h(level, "Rejected before compute") + "<p class='muted'>No proposal was rejected.</p>"
    return (_h(level, "Rejected before compute")
            + "<p class='muted'>Proposals refused before any trial ran: duplicates and dead ends by the hard "
              "gates, the rest by their critics.</p>"
            + _table(table) + _img(figures.get("rejections"), "rejections"))


def _dead_ends(data: CampaignData, level: int, figures: dict[str, bytes]) -> str:
    if data.dead_ends.empty:
        return _h(level, "Dead ends") + "<p class='muted'>No dead end was registered.</p>"
    names = {int(i): str(n) for i, n in zip(data.teams["id"], data.teams["name"])}
    table = data.dead_ends.assign(team=[names.get(int(t), "—") if not pd.isna(t) else "—"
                                        for t in data.dead_ends["team_id"]],
                                  evidence=[", ".join(str(x) for x in (ids or [])) for ids in
                                            data.dead_ends["evidence_trial_ids"]])
    return (_h(level, "Dead ends")
            + _table(metrics.dead_ends_by_reason(data))
            + _img(figures.get("dead_ends"), "dead ends by reason")
            + _table(table, {"signature": "direction", "description": "description", "reason": "reason",
                             "team": "team", "evidence": "evidence trials",
                             "created_at": "registered (UTC)"}))


def _failures(data: CampaignData, level: int, figures: dict[str, bytes]) -> str:
    table = metrics.failure_classes(data)
    if table.empty:
        return _h(level, "Failures") + "<p class='good'>No trial failed.</p>"
    return _h(level, "Failures") + _table(table) + _img(figures.get("failures"), "failure classes")


def _costs(data: CampaignData, level: int, figures: dict[str, bytes]) -> str:
    s = metrics.summarize(data)
    unit = metrics.compute_unit(data, " (CPU trials count one slot)")
    parts = [_h(level, "Costs"),
             f"<p>{_num(s.gpu_hours, 3)} {unit} over {s.trials_finished} finished trials; "
             f"{s.wall_clock_min:.1f} min of wall clock.</p>"]
    spend = metrics.llm_spend(data)
    if spend.empty:
        parts.append("<p class='muted'>No LLM call was made (offline agents).</p>")
    else:
        parts.append(f"<p>LLM: {s.llm_calls} calls, ${s.llm_usd:.4f}.</p>")
        parts.append(_table(spend, cells={"cost_usd": lambda v: _e(f"{float(v):.4f}")}))
        parts.append(_img(figures.get("llm_spend"), "LLM spend"))
    return "".join(parts)


def _forum(data: CampaignData, level: int) -> str:
    forum = data.forum
    posts = forum[forum["kind"].isin(HIGHLIGHT_KINDS)].sort_values("id").tail(HIGHLIGHTS)
    if posts.empty:
        return _h(level, "Forum highlights") + "<p class='muted'>No post.</p>"
    names = {int(i): str(n) for i, n in zip(data.teams["id"], data.teams["name"])}
    authors = {int(i): str(n) for i, n in zip(data.agents["id"], data.agents["name"])}
    items = []
    for _, p in posts.iterrows():
        who = authors.get(int(p["author_id"]), "?") if not pd.isna(p["author_id"]) else "coordinator"
        team = names.get(int(p["team_id"]), "") if not pd.isna(p["team_id"]) else ""
        body = str(p["body"] or "")
        items.append(f"<div class='post'><b>[{_e(p['kind'])}] {_e(p['title'])}</b> "
                     f"<span class='muted'>{_e(who)}{' · ' + _e(team) if team else ''} · "
                     f"{_cell_time(p['created_at'])}</span>"
                     f"<pre>{_e(body[:800] + ('…' if len(body) > 800 else ''))}</pre></div>")
    total = int(forum["kind"].isin(HIGHLIGHT_KINDS).sum())
    return (_h(level, "Forum highlights")
            + f"<p class='muted'>The last {len(posts)} of {total} posts about promotions, discussions, "
              f"rosters, dead ends, failures and analyses ({len(forum)} posts in all, critiques "
              "included).</p>"
            + "".join(items))


def _cell_time(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if isinstance(value, pd.Timestamp) and not pd.isna(value) else "—"


def _sandbox(data: CampaignData) -> str:
    """The sandbox the trials ran in (the campaign's last start); a campaign without one says so."""
    events = data.events
    if events.empty or "kind" not in events:
        return "none recorded: trial code ran unsandboxed"
    rows = events[events["kind"] == "campaign.sandbox"]
    mode = str(rows.iloc[-1]["data"].get("sandbox", "")) if not rows.empty else ""
    return mode if mode not in ("", "none") else "NONE: trial code ran with the user's rights, unsandboxed"
