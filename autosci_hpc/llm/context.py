"""What an LLM agent is shown, built to a token budget that does not grow with the log.

The state part of a prompt is made of sections — the champion and its model card, the best and
the most recent trials, forum highlights, dead ends (the agent's team's first), open proposals,
and the agent's own notes — each with a share of the budget; items go in until the share is
spent, and a line says how many were left out (the read tools page through the rest). Tokens are
estimated at three characters each, which overestimates for English text and code.

Nothing here reads the database: only views, which never carry the held-out test metric.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Optional, Sequence

from ..agents.policy import AgentInfo
from ..agents.views import DeadEndView, PostView, ProposalView, StateView, TaskView, TrialView
from ..state.lifecycle import PostKind, ProposalStatus, TrialStatus

CHARS_PER_TOKEN = 3
#: Forum kinds worth showing first: what changed the state of the search.
HIGHLIGHT_KINDS = (PostKind.PROMOTION, PostKind.RESULT, PostKind.DEAD_END, PostKind.ROSTER, PostKind.FAILURE,
                   PostKind.DISCUSSION)
#: Shares of the state budget.
SHARES = {"champion": 0.14, "best": 0.1, "recent": 0.2, "forum": 0.18, "dead_ends": 0.1, "proposals": 0.16,
          "memory": 0.07, "teams": 0.05}
MEMORY_CHARS = 2000


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def clip(text: str, max_chars: int) -> str:
    text = text.strip()
    return text if len(text) <= max_chars else text[: max(0, max_chars - 1)].rstrip() + "…"


def fmt(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.4g}"


def compact(value: Any, max_chars: int = 300) -> str:
    return clip(json.dumps(value, sort_keys=True, default=str), max_chars)


def section(title: str, items: Iterable[str], budget_tokens: int, *, empty: str = "(none)",
            total: Optional[int] = None, more_hint: str = "") -> str:
    """`title` and as many `items` as fit in `budget_tokens`, then a count of what was left out."""
    head = f"## {title}\n"
    used = estimate_tokens(head)
    lines: list[str] = []
    items = list(items)
    for item in items:
        cost = estimate_tokens(item) + 1
        if used + cost > budget_tokens - 12:
            break
        lines.append(item)
        used += cost
    count = total if total is not None else len(items)
    if not items:
        lines.append(empty)
    elif len(lines) < count:
        lines.append(f"({count - len(lines)} more not shown{'; ' + more_hint if more_hint else ''})")
    return head + "\n".join(lines)


# ---- one line per thing -----------------------------------------------------------------------------


def trial_line(t: TrialView) -> str:
    change = t.config_signature.split("|", 1)[-1]
    text = (f"trial {t.id} {t.role} seed {t.seed} {t.status}"
            + (f" p{t.proposal_id}" if t.proposal_id else "") + (f" team {t.team_id}" if t.team_id else "")
            + f": metric {fmt(t.metric)}" + (f" (Δ champion {t.champion_delta:+.4g})" if t.champion_delta is not None
                                             else "")
            + f" | {clip(change, 160)}")
    if t.status == TrialStatus.FAILED:
        text += f" | {t.failure_class}: {clip(t.failure_reason, 160)}"
    return text


def post_line(p: PostView, body_chars: int = 240) -> str:
    body = clip(" ".join(p.body.split()), body_chars)
    return f"[{p.kind} #{p.id}{' team ' + str(p.team_id) if p.team_id else ''}] {clip(p.title, 120)}" + (
        f" — {body}" if body else "")


def dead_end_line(d: DeadEndView) -> str:
    return (f"{d.signature}{' (team ' + str(d.team_id) + ')' if d.team_id else ''}: {clip(d.reason, 160)}"
            f" [trials {', '.join(map(str, d.evidence_trial_ids[:8]))}]")


def proposal_line(p: ProposalView, rationale_chars: int = 200) -> str:
    change = compact(p.overrides, 160) + (f" + {len(p.edits)} code edit(s)" if p.edits else "")
    return (f"p{p.id} [{p.status}{'/' + p.outcome if p.outcome else ''}] by {p.author} ({p.focus}"
            f"{', team ' + str(p.team_id) if p.team_id else ''}): {clip(p.title, 100)} | {change} | "
            f"{clip(p.rationale, rationale_chars)}")


# ---- the task and the state ----------------------------------------------------------------------------


def task_text(task: TaskView, max_tokens: int = 2500) -> str:
    axes = "\n".join(f"- {a.key} ({a.kind}, group {a.group}): "
                     + (f"values {a.values}" if a.kind == "choice" else f"range [{a.low}, {a.high}]")
                     for a in task.axes)
    base = "\n".join(f"- {k} = {compact(v, 80)}" for k, v in sorted(task.base_config.items()))
    text = (f"# Task {task.name}\nMetric: {task.metric} ({task.direction}). Editable files: "
            f"{', '.join(task.editable)}.\n\n{task.description.strip()}\n\n"
            f"## Hypothesis families (axis groups) and their config keys\n{axes or '(none declared)'}\n\n"
            f"## Config keys of the program (config.yaml, dotted) and their shipped values\n{base or '(none)'}")
    return clip(text, max_tokens * CHARS_PER_TOKEN)


def render_state(view: StateView, agent: AgentInfo, budget_tokens: int) -> str:
    """The campaign as this agent should see it, within `budget_tokens` (estimated)."""
    share = {k: max(60, int(v * budget_tokens)) for k, v in SHARES.items()}
    parts = []
    champion = view.champion
    if champion is None:
        parts.append("## Champion\n(none yet: the baseline is still running)")
    else:
        seeds = ", ".join(f"seed {k}: {fmt(v)}" for k, v in sorted(champion.seed_metrics.items()))
        text = (f"## Champion #{champion.id}\n{view.task.metric} {fmt(champion.metric_mean)} ± "
                f"{fmt(champion.metric_std)} ({seeds})\noverrides on the shipped config: "
                f"{compact(champion.overrides, 600)}\nprogram snapshot {champion.snapshot_id}\n"
                f"model card:\n{champion.model_card.strip()}")
        parts.append(clip(text, share["champion"] * CHARS_PER_TOKEN))
    scored = [t for t in view.trials if t.metric is not None and t.status == TrialStatus.SUCCEEDED]
    best = view.best_trials or sorted(scored, key=lambda t: t.metric if view.task.direction == "minimize"
                                                            else -(t.metric or 0.0))
    parts.append(section(f"Best trials ({view.task.direction} {view.task.metric})", map(trial_line, best),
                         share["best"]))
    parts.append(section("Most recent trials", map(trial_line, view.trials), share["recent"],
                         more_hint="read_log pages through them"))
    highlights = sorted(view.forum, key=lambda p: (p.kind not in HIGHLIGHT_KINDS,
                                                   HIGHLIGHT_KINDS.index(p.kind) if p.kind in HIGHLIGHT_KINDS else 0,
                                                   -p.id))
    parts.append(section("Forum highlights", map(post_line, highlights), share["forum"],
                         more_hint="read_forum shows more"))
    dead = sorted(view.dead_ends, key=lambda d: (d.team_id != agent.team_id or agent.team_id is None,
                                                 d.signature))
    parts.append(section("Dead ends (directions shown not to help: proposals moving there are refused)",
                         map(dead_end_line, dead), share["dead_ends"], more_hint="read_dead_ends lists them"))
    concluded = (ProposalStatus.DONE, ProposalStatus.REJECTED)
    open_first = sorted(view.proposals,
                        key=lambda p: (p.status in concluded, p.team_id != agent.team_id, -p.id))
    parts.append(section("Proposals (open ones and your team's first)", map(proposal_line, open_first),
                         share["proposals"], more_hint="read_proposals filters them"))
    if view.teams:
        parts.append(section("Teams", (f"team {t.get('id')} {t.get('name')}: focus {t.get('focus')}, "
                                       f"{t.get('status')}, {t.get('experiments_since_improvement')} experiments "
                                       f"since an improvement — {clip(str(t.get('hypothesis', '')), 160)}"
                                       for t in view.teams), share["teams"]))
    notes = str(agent.memory.get("notes", "")).strip()
    parts.append(clip(f"## Your notes (update them with update_memory)\n{notes or '(empty)'}",
                      share["memory"] * CHARS_PER_TOKEN))
    you = (f"## You\n{agent.name}, {agent.role}" + (f", team {agent.team_id}" if agent.team_id else ", no team yet")
           + (f", team focus '{agent.focus}'" if agent.focus else ""))
    return clip("\n\n".join([you] + parts), budget_tokens * CHARS_PER_TOKEN)


def listing(lines: Sequence[str], limit: int, max_chars: int = 8000) -> str:
    shown = list(lines[:limit])
    text = "\n".join(shown) if shown else "(nothing matches)"
    if len(lines) > limit:
        text += f"\n({len(lines) - limit} more; raise limit or filter)"
    return clip(text, max_chars)
