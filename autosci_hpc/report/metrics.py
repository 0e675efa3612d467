"""The numbers of a campaign and of a comparison of campaigns, as pure functions of `CampaignData`.

These definitions are the contract `autosci report`, `autosci compare` and the benchmarks share:

- trial ordinal: the finished trials (status succeeded or failed; every role, the baseline, the
  replicates and the retried attempts, since each took a slot) ordered by `finished_at` then id,
  numbered 1..N;
- best so far after trial n: the `metric_mean` of the latest champion promoted at or before that
  trial's `finished_at` (NaN before the baseline champion exists), where a champion counts as
  promoted when the last trial it was measured on finished (see `in_force_at`: the promotion row
  is stamped just after that trial's result was ingested);
- GPU-hours: the cumulative `device_hours_of(duration_s, gpus_per_trial(config))`;
- trials to target: the smallest n whose best so far reaches the target (>= when maximizing,
  <= when minimizing), None if never;
- accepted improvements: the champions after the baseline one;
- default target: baseline + 0.5 x (best final champion over the compared campaigns - baseline).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from ..coordination.promotion import t975
from ..state import conditions as run_conditions
from ..state.budget import device_hours_of, gpus_per_trial
from ..state.lifecycle import FINISHED_TRIALS, ProposalStatus, TrialStatus
from .load import CampaignData, ReportError

#: Proposal statuses past the critics: the proposal was approved (and may since have run).
APPROVED = (ProposalStatus.APPROVED, ProposalStatus.QUEUED, ProposalStatus.CLAIMED, ProposalStatus.RUNNING,
            ProposalStatus.REPLICATING, ProposalStatus.DONE)
#: The mode the others are measured against (the paper's decentralized teams).
REFERENCE_MODE = "decentralized"


# ---- the trial ordinal and the curves -----------------------------------------------------------


def finished_trials(data: CampaignData) -> pd.DataFrame:
    """The finished trials in the order they finished, with their ordinal `trial_n` (1..N)."""
    trials = data.trials
    done = trials[trials["status"].isin(FINISHED_TRIALS)]
    # A finished trial without a time (never seen in practice) sorts last rather than vanishing.
    done = done.sort_values(["finished_at", "id"], na_position="last", kind="stable").reset_index(drop=True)
    done.insert(0, "trial_n", np.arange(1, len(done) + 1, dtype=np.int64))
    return done


def champions_in_order(data: CampaignData) -> pd.DataFrame:
    """Champions by promotion time (then id): the last row is the one in force now."""
    return data.champions.sort_values(["promoted_at", "id"], kind="stable").reset_index(drop=True)


def in_force_at(data: CampaignData) -> pd.Series:
    """When each champion (in `champions_in_order`) took effect: its `promoted_at`, or the finishing
    time of the last trial it was measured on (`Champion.trial_ids`) when that is earlier.

    Why not `promoted_at` alone: the coordinator promotes in the reaction to the last replicate's
    result, a few milliseconds after that trial's `finished_at` was stamped; compared naively, the
    promotion would count only from the next trial, and not at all when it came with the campaign's
    last trial. Without trial ids (or with one unfinished) the promotion time is used as it is.
    """
    champions = champions_in_order(data)
    finished = {int(i): t for i, t in zip(data.trials["id"], data.trials["finished_at"]) if not pd.isna(t)}
    times = []
    for promoted, ids in zip(champions["promoted_at"], champions["trial_ids"]):
        ends = [finished.get(int(i)) for i in (ids or [])]
        known = [t for t in ends if t is not None]
        times.append(min(promoted, max(known)) if known and len(known) == len(ends) else promoted)
    return pd.Series(pd.to_datetime(times, utc=True), dtype="datetime64[us, UTC]")


def best_so_far(data: CampaignData) -> pd.DataFrame:
    """Columns trial_n, gpu_hours, best, finished_at: one row per finished trial; `best` is the
    metric_mean of the latest champion in force (`in_force_at`) at that trial's finishing time."""
    done = finished_trials(data)
    champions = champions_in_order(data)
    means = champions["metric_mean"].to_numpy(dtype=float)
    effective = in_force_at(data).to_numpy(dtype="datetime64[us]")
    finished = done["finished_at"]
    # A trial without a finishing time sees every champion (it sorts last, see finished_trials).
    at = finished.to_numpy(dtype="datetime64[us]").copy()
    at[np.isnat(at)] = np.datetime64("9999-12-31")
    # in_force[n, k]: champion k is in force at trial n; the latest such champion (in promotion
    # order) is the one that counts.
    in_force = effective[None, :] <= at[:, None]
    any_in_force = in_force.any(axis=1)
    latest = len(means) - 1 - np.argmax(in_force[:, ::-1], axis=1) if len(means) else np.zeros(len(at), int)
    best = np.where(any_in_force, means[latest] if len(means) else np.nan, np.nan)
    gpus = gpus_per_trial(data.campaign_config())
    held = [run_conditions.gpus_held(c, gpus) for c in trial_conditions(done)]
    hours = [device_hours_of(float(d), g) for d, g in zip(done["duration_s"].fillna(0.0).astype(float), held)]
    return pd.DataFrame({"trial_n": done["trial_n"], "gpu_hours": np.cumsum(hours, dtype=float),
                         "best": best.astype(float), "finished_at": finished})


def uses_gpus(data: CampaignData) -> bool:
    """Whether the campaign's trials held GPUs: by its config, or by a trial's recorded run conditions."""
    if gpus_per_trial(data.campaign_config()) > 0:
        return True
    return any(run_conditions.gpus_held(c, 0.0) > 0 for c in trial_conditions(data.trials))


def trial_conditions(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """Each trial's run conditions (the report reads a database read-only, so one written before the
    record was one is read as its migration would make it)."""
    n = len(trials)
    stored = trials["conditions"] if "conditions" in trials else [{}] * n
    environments = trials["environment"] if "environment" in trials else [{}] * n
    return [run_conditions.upgrade(c, env) for c, env in zip(stored, environments)]


def compute_unit(data: CampaignData, detail: str = " (CPU trials)") -> str:
    """What the campaign's compute is counted in: GPU-hours, or slot-hours for CPU trials."""
    return "GPU-hours" if uses_gpus(data) else f"slot-hours{detail}"


def gpu_hours_used(data: CampaignData) -> float:
    curve = best_so_far(data)
    return float(curve["gpu_hours"].iloc[-1]) if len(curve) else 0.0


# ---- champions ----------------------------------------------------------------------------------


def _baseline_row(data: CampaignData) -> Optional[pd.Series]:
    champions = data.champions.sort_values("id")
    if champions.empty:
        return None
    marked = champions[champions["rule"] == "baseline"]
    return (marked if len(marked) else champions).iloc[0]


def baseline_metric(data: CampaignData) -> float:
    """The baseline champion's metric_mean (NaN when the baseline never finished)."""
    row = _baseline_row(data)
    return float(row["metric_mean"]) if row is not None else math.nan


def final_metric(data: CampaignData) -> float:
    """The metric_mean of the champion in force at the end (NaN without any champion)."""
    champions = champions_in_order(data)
    return float(champions["metric_mean"].iloc[-1]) if len(champions) else math.nan


def final_interval(data: CampaignData) -> Optional[tuple[float, float, int]]:
    """(low, high, seeds) of the 95% interval of the final champion's mean over its seeds (None with
    fewer than two seeds): the same interval status, the report and the model card show."""
    champions = champions_in_order(data)
    if not len(champions):
        return None
    last = champions.iloc[-1]
    n = len(last["seed_metrics"] or {})
    if n < 2:
        return None
    half = t975(n - 1) * float(last["metric_std"]) / math.sqrt(n)
    mean = float(last["metric_mean"])
    return mean - half, mean + half, n


def mean_interval(values: Sequence[float]) -> Optional[tuple[float, float, float]]:
    """(mean, low, high): the 95% t interval of a mean over campaigns (None with fewer than two)."""
    clean = [float(v) for v in values if not math.isnan(float(v))]
    if len(clean) < 2:
        return None
    mean = float(np.mean(clean))
    half = t975(len(clean) - 1) * float(np.std(clean, ddof=1)) / math.sqrt(len(clean))
    return mean, mean - half, mean + half


def accepted_improvements(data: CampaignData) -> int:
    """Champion rows minus the baseline one: the promotions the campaign accepted."""
    return max(0, len(data.champions) - (1 if _baseline_row(data) is not None else 0))


# ---- the target ---------------------------------------------------------------------------------


def _check_comparable(datas: Sequence[CampaignData]) -> None:
    if not datas:
        raise ReportError("no campaign given")
    first = datas[0]
    for other in datas[1:]:
        if (other.metric, other.direction) != (first.metric, first.direction):
            raise ReportError(f"{other.folder} measures {other.metric} ({other.direction}) but "
                              f"{first.folder} measures {first.metric} ({first.direction}): campaigns of "
                              "different metrics cannot be compared")


def reaches(value: float, target: float, maximize: bool) -> bool:
    if math.isnan(value) or math.isnan(target):
        return False
    return value >= target if maximize else value <= target


def default_target(datas: Sequence[CampaignData]) -> float:
    """Half-way from the baseline (the first campaign's) to the best final champion of any campaign,
    in the metric's direction. NaN when the first campaign has no baseline champion."""
    _check_comparable(datas)
    baseline = baseline_metric(datas[0])
    finals = [f for f in (final_metric(d) for d in datas) if not math.isnan(f)]
    if math.isnan(baseline) or not finals:
        return math.nan
    best = max(finals) if datas[0].maximize else min(finals)
    return baseline + 0.5 * (best - baseline)


def _first_reaching(data: CampaignData, target: float) -> Optional[pd.Series]:
    curve = best_so_far(data)
    hit = curve[[reaches(b, target, data.maximize) for b in curve["best"]]]
    return hit.iloc[0] if len(hit) else None


def trials_to_target(data: CampaignData, target: float) -> Optional[int]:
    """The smallest trial ordinal whose best so far reaches the target; None if none does."""
    row = _first_reaching(data, target)
    return int(row["trial_n"]) if row is not None else None


def gpu_hours_to_target(data: CampaignData, target: float) -> Optional[float]:
    """Cumulative GPU-hours at the trial that first reached the target; None if none did."""
    row = _first_reaching(data, target)
    return float(row["gpu_hours"]) if row is not None else None


# ---- the story of one campaign ------------------------------------------------------------------


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return repr(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def overrides_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """`key: old -> new` for each changed key ("(default)" where a side does not set it)."""
    parts = []
    for key in sorted(set(before) | set(after)):
        if before.get(key, None) != after.get(key, None) or (key in before) != (key in after):
            old = _fmt_value(before[key]) if key in before else "(default)"
            new = _fmt_value(after[key]) if key in after else "(default)"
            parts.append(f"{key}: {old} -> {new}")
    return "; ".join(parts)


def _team_names(data: CampaignData) -> dict[int, str]:
    return {int(i): str(n) for i, n in zip(data.teams["id"], data.teams["name"])}


def _name(names: dict[int, str], team_id: Any) -> str:
    return "—" if pd.isna(team_id) else names.get(int(team_id), f"team #{int(team_id)}")


def lineage(data: CampaignData) -> pd.DataFrame:
    """One row per champion in promotion order: what changed against the previous champion, on which
    seeds it was measured, by which rule and from which team's proposal; `trial_n` is the first
    trial ordinal at which it was in force (NA if the campaign ended first)."""
    champions = champions_in_order(data)
    proposals = data.proposals.set_index("id") if len(data.proposals) else data.proposals
    names = _team_names(data)
    curve = best_so_far(data)
    by_id = {int(r["id"]): r for _, r in champions.iterrows()}
    effective = dict(zip((int(i) for i in champions["id"]), in_force_at(data)))
    rows = []
    for _, c in champions.iterrows():
        previous = by_id.get(int(c["previous_id"])) if not pd.isna(c["previous_id"]) else None
        before = ({**data.snapshot_configs.get(str(previous["snapshot_id"]), {}), **previous["overrides"]}
                  if previous is not None else {})
        after = {**data.snapshot_configs.get(str(c["snapshot_id"]), {}), **c["overrides"]}
        known = not pd.isna(c["proposal_id"]) and int(c["proposal_id"]) in proposals.index
        proposal = proposals.loc[int(c["proposal_id"])] if known else None
        edits = [str(e.get("path", "?")) for e in (proposal["edits"] if proposal is not None else [])]
        if previous is None and not c["overrides"]:
            change = "the task's program as shipped"
        elif previous is None:
            # A campaign started from a given champion (`task.overrides`): what it set on the program.
            base = data.snapshot_configs.get(str(c["snapshot_id"]), {})
            change = "starting champion: " + overrides_diff(base, after)
        else:
            change = overrides_diff(before, after) or "(no config change)"
        if edits:
            change += "; code edits: " + ", ".join(edits)
        in_force = curve[curve["best"].notna() & (curve["finished_at"] >= effective[int(c["id"])])]["trial_n"]
        seeds = c["seed_metrics"] or {}
        rows.append({
            "champion": int(c["id"]), "promoted_at": c["promoted_at"],
            "trial_n": int(in_force.iloc[0]) if len(in_force) else pd.NA,
            "change": change,
            "seed_metrics": ", ".join(f"{k}: {float(v):.4g}"
                                      for k, v in sorted(seeds.items(), key=_seed_key)),
            "mean": float(c["metric_mean"]), "std": float(c["metric_std"]), "delta": float(c["delta"]),
            "rule": str(c["rule"]),
            "proposal": pd.NA if proposal is None else int(c["proposal_id"]),
            "title": "" if proposal is None else str(proposal["title"]),
            "team": _name(names, c["team_id"]),
        })
    columns = ["champion", "promoted_at", "trial_n", "change", "seed_metrics", "mean", "std", "delta", "rule",
               "proposal", "title", "team"]
    return pd.DataFrame(rows, columns=columns).astype({"trial_n": "Int64", "proposal": "Int64"})


def _seed_key(item: tuple[str, Any]) -> tuple[int, str]:
    key = item[0]
    return (int(key), key) if str(key).lstrip("-").isdigit() else (1 << 30, str(key))


def team_contributions(data: CampaignData) -> pd.DataFrame:
    """Per team: proposals posted / approved / rejected, finished trials, promotions, best champion
    delta. Proposals posted before teams existed (the first discussion) form the row "(discussion)"."""
    names = _team_names(data)
    proposals, trials = data.proposals, finished_trials(data)
    champions = data.champions[data.champions["rule"] != "baseline"]
    rows = []
    keys: list[Optional[int]] = [int(i) for i in data.teams["id"]]
    if proposals["team_id"].isna().any():
        keys.append(None)
    for key in keys:
        def mine(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[frame["team_id"].isna()] if key is None else frame[frame["team_id"] == key]

        team = data.teams[data.teams["id"] == key].iloc[0] if key is not None else None
        posted, won = mine(proposals), mine(champions)
        rows.append({
            "team": names[key] if key is not None else "(discussion)",
            "focus": "" if team is None else str(team["focus"]),
            "status": "" if team is None else str(team["status"]),
            "proposals": len(posted),
            "approved": int(posted["status"].isin(APPROVED).sum()),
            "rejected": int((posted["status"] == ProposalStatus.REJECTED).sum()),
            "trials": len(mine(trials)),
            "promotions": len(won),
            "best_delta": float(won["delta"].max()) if len(won) else math.nan,
        })
    columns = ["team", "focus", "status", "proposals", "approved", "rejected", "trials", "promotions",
               "best_delta"]
    return pd.DataFrame(rows, columns=columns)


def dead_ends_by_reason(data: CampaignData) -> pd.DataFrame:
    """Registered dead ends grouped by their stated reason, with the directions they close."""
    dead = data.dead_ends
    names = _team_names(data)
    rows = []
    for reason, group in dead.groupby("reason", sort=False):
        rows.append({"reason": str(reason), "dead_ends": len(group),
                     "signatures": ", ".join(str(s) for s in group["signature"]),
                     "teams": ", ".join(sorted({_name(names, t) for t in group["team_id"]}))})
    frame = pd.DataFrame(rows, columns=["reason", "dead_ends", "signatures", "teams"])
    return frame.sort_values("dead_ends", ascending=False, kind="stable").reset_index(drop=True)


def failure_classes(data: CampaignData) -> pd.DataFrame:
    """Failed trials by failure class; `retried` counts those the infrastructure retried."""
    failed = data.trials[data.trials["status"] == TrialStatus.FAILED]
    rows = []
    classes = failed["failure_class"].fillna("").replace("", "unclassified")
    for cls, group in failed.groupby(classes, sort=False):
        rows.append({"failure_class": str(cls), "trials": len(group),
                     "retried": int(group["superseded_by"].notna().sum()),
                     "example": str(group["failure_reason"].iloc[0])[:200]})
    frame = pd.DataFrame(rows, columns=["failure_class", "trials", "retried", "example"])
    return frame.sort_values("trials", ascending=False, kind="stable").reset_index(drop=True)


def rejection_kind(reason: str) -> str:
    """What refused a proposal before compute, from the first finding of its reject reason
    (`agents.evidence` prefixes gate findings with their kind)."""
    text = (reason or "").strip()
    if text.startswith("duplicate:"):
        return "duplicate"
    if text.startswith("dead_end:"):
        return "dead end"
    if text.startswith("unknown config key"):
        return "unknown key"
    if text.startswith("withdrawn:"):
        return "withdrawn"
    return "critics"


def rejections(data: CampaignData) -> pd.DataFrame:
    """Proposals rejected before any compute, by kind of reason (duplicate, dead end, critics, ...)."""
    rejected = data.proposals[data.proposals["status"] == ProposalStatus.REJECTED]
    kinds = [rejection_kind(str(r)) for r in rejected["reject_reason"].fillna("")]
    counts = pd.Series(kinds, dtype=object).value_counts()
    return pd.DataFrame({"kind": [str(k) for k in counts.index],
                         "proposals": [int(v) for v in counts.to_numpy()]})


def llm_spend(data: CampaignData) -> pd.DataFrame:
    """LLM spend by role and team (the accounting module's rows); empty when no call was made."""
    return data.spend.copy()


@dataclass
class Summary:
    """The headline numbers of one campaign."""

    trials_finished: int
    trials_failed: int
    trials_budget: int
    gpu_hours: float
    wall_clock_min: float
    baseline: float
    final: float
    accepted_improvements: int
    proposals: int
    rejected_before_compute: int
    duplicates: int
    dead_ends: int
    llm_calls: int
    llm_usd: float


def summarize(data: CampaignData) -> Summary:
    kinds = rejections(data)
    duplicates = kinds[kinds["kind"] == "duplicate"]["proposals"].sum()
    budget = (data.config.get("budget") or {}).get("trials") or 0
    return Summary(
        trials_finished=len(finished_trials(data)),
        trials_failed=int((data.trials["status"] == TrialStatus.FAILED).sum()),
        trials_budget=int(budget), gpu_hours=gpu_hours_used(data),
        wall_clock_min=float(data.campaign.get("wall_clock_s") or 0.0) / 60.0,
        baseline=baseline_metric(data), final=final_metric(data),
        accepted_improvements=accepted_improvements(data), proposals=len(data.proposals),
        rejected_before_compute=int(kinds["proposals"].sum()), duplicates=int(duplicates),
        dead_ends=len(data.dead_ends), llm_calls=len(data.llm_calls),
        llm_usd=float(data.llm_calls["cost_usd"].sum()) if len(data.llm_calls) else 0.0,
    )


# ---- comparing campaigns ------------------------------------------------------------------------


def campaign_seed(data: CampaignData) -> int:
    return int((data.config.get("campaign") or {}).get("seed", 0))


def _bounds(interval: Optional[tuple[float, float, float]]) -> Optional[tuple[float, float]]:
    return (interval[1], interval[2]) if interval else None


def _ci_text(interval: Optional[tuple[float, ...]]) -> str:
    """`[lo, hi]` of an interval's first two numbers, or `—` where there is none."""
    return f"[{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "—"


def compare_table(datas: Sequence[CampaignData], target: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per campaign, per mode).

    Per campaign: campaign (folder name), name, mode (`CampaignData.arm`: the coordination mode, or
    "random" for the random-search baseline), seed, trials_used, trials_to_target (<NA> if
    never reached), gpu_hours_to_target, reached, accepted_improvements, final_metric.

    Per mode: campaigns, reached, censored (campaigns that never reached the target: counted at
    their trials_used + 1), ttt_median / ttt_min / ttt_max (trials to target), improvements_median,
    final_mean / final_ci95 (the final champions' mean over the mode's campaigns and its 95% t interval;
    per campaign, final_ci95 is the final champion's own interval over its seeds),
    ttt_ratio_vs_decentralized (this mode's median trials-to-target over the decentralized median:
    the paper's "1.9x fewer experiments"), and improvements_vs_decentralized ("0 vs 7").
    """
    _check_comparable(datas)
    rows = []
    for data in datas:
        n = trials_to_target(data, target)
        rows.append({
            "campaign": data.label, "name": data.name, "mode": data.arm, "seed": campaign_seed(data),
            "trials_used": len(finished_trials(data)),
            "trials_to_target": pd.NA if n is None else n,
            "gpu_hours_to_target": gpu_hours_to_target(data, target) if n is not None else math.nan,
            "reached": n is not None,
            "accepted_improvements": accepted_improvements(data),
            "final_metric": final_metric(data),
            "final_ci95": _ci_text(final_interval(data)),
        })
    per_campaign = pd.DataFrame(rows, columns=["campaign", "name", "mode", "seed", "trials_used",
                                               "trials_to_target", "gpu_hours_to_target", "reached",
                                               "accepted_improvements", "final_metric", "final_ci95"])
    per_campaign = per_campaign.astype({"trials_to_target": "Int64", "gpu_hours_to_target": float})
    # Censoring: a campaign that never got there needed more than all the trials it had.
    censored_ttt = per_campaign["trials_to_target"].fillna(per_campaign["trials_used"] + 1).astype(float)
    modes = sorted(per_campaign["mode"].unique(), key=lambda m: (m != REFERENCE_MODE, m))
    stats = []
    for mode in modes:
        mine = per_campaign["mode"] == mode
        ttt = censored_ttt[mine]
        reached = per_campaign["reached"][mine].astype(bool)
        stats.append({"mode": mode, "campaigns": int(mine.sum()), "reached": int(reached.sum()),
                      "censored": int((~reached).sum()), "ttt_median": float(ttt.median()),
                      "ttt_min": float(ttt.min()), "ttt_max": float(ttt.max()),
                      "improvements_median": float(per_campaign["accepted_improvements"][mine].median()),
                      "final_mean": float(per_campaign["final_metric"][mine].mean()),
                      "final_ci95": _ci_text(_bounds(mean_interval(list(per_campaign["final_metric"][mine]))))
                      })
    per_mode = pd.DataFrame(stats, columns=["mode", "campaigns", "reached", "censored", "ttt_median",
                                            "ttt_min", "ttt_max", "improvements_median", "final_mean",
                                            "final_ci95"])
    reference = per_mode[per_mode["mode"] == REFERENCE_MODE]
    ref_ttt = float(reference["ttt_median"].iloc[0]) if len(reference) else math.nan
    ref_imp = float(reference["improvements_median"].iloc[0]) if len(reference) else math.nan
    per_mode["ttt_ratio_vs_decentralized"] = per_mode["ttt_median"] / ref_ttt
    per_mode["improvements_vs_decentralized"] = [
        f"{m:g} vs {ref_imp:g}" if not math.isnan(ref_imp) else "—" for m in per_mode["improvements_median"]]
    return per_campaign, per_mode
