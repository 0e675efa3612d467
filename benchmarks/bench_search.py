"""Search efficiency: trials to a target, accepted improvements from a strong champion, and false
promotions with and without the seed gate — decentralized against a single agent and random search.

    python benchmarks/bench_search.py                  # quick: diabetes, 5 seeds, 20 trials per campaign
    python benchmarks/bench_search.py --full           # 8 seeds, 40 trials, 3 strong-champion seeds
    python benchmarks/bench_search.py --seeds 10 --trials 60 --task tasks/protein_fitness

All campaigns are real ones, run by `autosci compare` (the same code a user runs) with the offline
policy and the local executor, on one matched budget per part:

1. *Trials to target*: decentralized, single (the autoresearch loop) and random search (the single
   loop with a policy that samples the axes uniformly), one campaign per arm and seed. The target
   is the report's default — half-way from the baseline to the best champion any campaign found —
   so that it is reachable but not trivial; the ratio is single's (random's) median over
   decentralized's (the paper: 1.9× fewer experiments). A campaign that never reaches it counts as
   its budget + 1 (censored, and counted).
2. *From a strong champion*: each arm starts from the best champion part 1 found (`task.overrides`)
   and we count accepted improvements (the paper: 7 vs 0).
3. *False promotions*: on a task no change can improve (the `flat` fixture, with per-run noise of
   sd `--run-noise` that depends on the configuration too), every promotion is false. Rate =
   promotions per candidate screened, with the seed gate off (one seed decides), on (3 seeds, the
   `mean` rule), on with the paired t-test rule, and with the default `paired` rule; real campaigns.
4. *The rules, candidate by candidate*: thousands of candidates judged by `promotion.decide` (the
   code the coordinator runs, with the same screen and the same adaptive seeds) on the flat task's
   metric (its program's formula, checked against the program itself at start), in campaigns of 50
   candidates that share their baseline champion: false promotions per candidate with a 95% interval
   from the campaigns' rates (the candidates of one campaign share its champion's runs, so they are not
   independent draws; the Wilson interval that treats them so is kept too), and the rate in the
   campaigns whose three baseline runs happen to lie within half a sigma; the chance that a candidate with a planted true gain
   of 2 sigma (sigma: the seed-to-seed spread of one configuration) is promoted; the trials each
   decision costs, candidate and champion reruns apart.
5. *Planted improvement, whole campaigns*: the flat task with a gain of 2 sigma planted where
   x >= `--planted-from` (`planted_gain`), each campaign from its own start (its own baseline draws); a
   campaign found it if its final champion is there. Whether the offline search proposed a change in
   the region at all is reported apart, with how many of those proposals the rule promoted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl  # noqa: E402

from autosci_hpc.compare import run_comparison  # noqa: E402
from autosci_hpc.config import PromotionSection  # noqa: E402
from autosci_hpc.coordination import promotion  # noqa: E402
from autosci_hpc.state.models import Champion  # noqa: E402
from autosci_hpc.task import load_task  # noqa: E402
from autosci_hpc.report import metrics  # noqa: E402
from autosci_hpc.report.load import CampaignData, load_campaign  # noqa: E402

NAME = "search efficiency"
# Quick: about 8 minutes on 2 cores for parts 1-2 (diabetes trials take ~2.5 s of CPU each, 2 at a time), and
# 6-12 more for the rules (parts 3-5; `--only-rules` runs just those).
QUICK = {"task": "tasks/diabetes", "seeds": 5, "trials": 18, "strong_seeds": 2, "strong_trials": 15,
         "noise_trials": 30, "run_noise": 0.02, "sim_candidates": 20000, "planted_campaigns": 20,
         "planted_trials": 60, "planted_from": 0.25}
FULL = {"task": "tasks/diabetes", "seeds": 8, "trials": 40, "strong_seeds": 3, "strong_trials": 40,
        "noise_trials": 60, "run_noise": 0.02, "sim_candidates": 100000, "planted_campaigns": 40,
        "planted_trials": 60, "planted_from": 0.25}
#: The rules side by side: the gate off, the earlier `mean` and `ttest` rules, and the default.
RULES = {"off (1 seed, mean)": {"seeds": 1, "rule": "mean"},
         "mean (3 seeds)": {"seeds": 3, "rule": "mean"},
         "ttest (3 seeds, alpha 0.1)": {"seeds": 3, "rule": "ttest", "alpha": 0.1},
         "paired (default)": {"rule": "paired"}}  # named: the campaign config below pins `mean`
DEFAULT_RULE = "paired (default)"
CONFIG = bl.ROOT / "configs" / "campaign" / "diabetes_demo.yaml"
ARMS = ("decentralized", "single", "random")
FLAT_TASK = bl.ROOT / "tests" / "fixtures" / "tasks" / "flat"


def _quiet(_line: str) -> None:
    pass


def _compare(out: Path, arms: tuple[str, ...], seeds: int, overrides: list[str]) -> list[CampaignData]:
    run_comparison([str(CONFIG)], overrides, list(arms), list(range(seeds)), out, progress=_quiet)
    return [load_campaign(out / f"{arm}-s{seed}") for arm in arms for seed in range(seeds)]


def _median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def _spread(values: list[float]) -> str:
    return f"{min(values):g}–{max(values):g}" if values else "—"


def trials_to_target(datas: list[CampaignData], arms: tuple[str, ...]) -> dict[str, Any]:
    target = metrics.default_target(datas)
    per_campaign, _ = metrics.compare_table(datas, target)
    out: dict[str, Any] = {"target": target, "arms": {}}
    for arm in arms:
        rows = per_campaign[per_campaign["mode"] == arm]
        reached = rows[rows["reached"]]
        # Censored: a campaign that never reached the target counts as its trials used + 1.
        counted = [float(r["trials_to_target"]) if r["reached"] else float(r["trials_used"]) + 1
                   for _, r in rows.iterrows()]
        out["arms"][arm] = {"campaigns": len(rows), "reached": len(reached), "trials_to_target": counted,
                            "median": _median(counted), "spread": _spread(counted),
                            "final_metric_median": _median([float(v) for v in rows["final_metric"]])}
    return out


def best_champion(datas: list[CampaignData]) -> dict[str, Any]:
    """The overrides of the best champion any campaign found (the strong starting point of part 2)."""
    best: Optional[tuple[float, dict[str, Any]]] = None
    for data in datas:
        champions = data.champions.sort_values("id")
        last = champions.iloc[-1]
        value = float(last["metric_mean"])
        score = value if data.maximize else -value
        if best is None or score > best[0]:
            best = (score, dict(last["overrides"]))
    assert best is not None
    return best[1]


def _dotlist(keys: dict[str, Any]) -> list[str]:
    return [f"promotion.{k}={v}" for k, v in keys.items()]


def false_promotions(out: Path, trials: int, run_noise: float) -> dict[str, Any]:
    """Real campaigns on the flat task, one per rule: promotions per candidate screened (all false)
    and trials per decided candidate (candidates, replicates and champion reruns)."""
    results = {}
    for i, (label, keys) in enumerate(RULES.items()):
        folder = out / f"gate{i}"
        overrides = [f"task.path={FLAT_TASK}", f"budget.trials={trials}", "promotion.min_delta=0",
                     f"task.overrides={{run_noise: {run_noise}}}", "coordination.poll_interval_s=0.05",
                     *_dotlist(keys)]
        data = _compare(folder, ("decentralized",), 1, overrides)[0]
        roles = data.trials["role"]
        screened = int((roles == "candidate").sum())
        spent = int((roles != "baseline").sum())
        promoted = metrics.accepted_improvements(data)
        lo, hi = wilson(promoted, screened)
        results[label] = {"candidates": screened, "promotions": promoted,
                          "rate": promoted / screened if screened else None, "ci95": [lo, hi],
                          "trials_per_decision": spent / screened if screened else None}
    return results


# ---- the rules, candidate by candidate ----------------------------------------------------------

def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class FlatMetric:
    """The flat fixture's validation metric, computed as its sealed evaluator computes it (checked by
    `verify`): 0.5 + noise * u(seed) + run_noise * v(x, y, seed) (+ planted_gain where x >= planted_from)."""

    def __init__(self, noise: float, run_noise: float, planted_gain: float = 0.0,
                 planted_from: float = 0.5) -> None:
        self.noise, self.run_noise, self.planted_gain = noise, run_noise, planted_gain
        self.planted_from = planted_from

    def __call__(self, x: float, y: float, seed: int) -> float:
        u = random.Random(seed).uniform(-1.0, 1.0)
        v = random.Random(f"{x!r}:{y!r}:{seed}").gauss(0.0, 1.0) if self.run_noise else 0.0
        planted = self.planted_gain if x >= self.planted_from else 0.0
        return 0.5 + self.noise * u + self.run_noise * v + planted

    @property
    def sigma(self) -> float:
        """Seed-to-seed standard deviation of one configuration's metric."""
        return math.sqrt(self.run_noise ** 2 + self.noise ** 2 / 3)

    def verify(self, work: Path) -> None:
        """Run the fixture program and its sealed evaluator (whose number decides) on a few (x, y, seed)
        and compare: the simulation is the task."""
        program = FLAT_TASK / "program"
        evaluator = FLAT_TASK.parent / "toy" / "evaluator" / "evaluate.py"
        for x, y, seed in ((0.0, 0.0, 0), (0.25, -0.5, 3), (0.75, 0.1, 7)):
            overrides, out, artifacts = work / "o.json", work / "m.json", work / "artifacts"
            artifacts.mkdir(parents=True, exist_ok=True)
            overrides.write_text(json.dumps({"x": x, "y": y, "run_noise": self.run_noise, "noise": self.noise,
                                             "planted_gain": self.planted_gain,
                                             "planted_from": self.planted_from}))
            subprocess.run([sys.executable, "train.py", "--config", "config.yaml", "--overrides", str(overrides),
                            "--seed", str(seed), "--artifacts", str(artifacts)], cwd=program, check=True,
                           capture_output=True)
            subprocess.run([sys.executable, str(evaluator), "--artifacts", str(artifacts), "--seed",
                            str(seed), "--metrics", str(out), "--flat"],
                           cwd=work, check=True, capture_output=True)
            measured = json.loads(out.read_text())["score"]
            if abs(measured - self(x, y, seed)) > 1e-12:
                raise RuntimeError(f"the simulated flat metric drifted from the program: {measured} vs "
                                   f"{self(x, y, seed)} at x={x}, y={y}, seed={seed}")


def judge(task: Any, rules: PromotionSection, champion: Champion, reference: dict[int, float],
          spread: tuple[float, int], candidate: Any, has: Optional[set[int]] = None) -> tuple[bool, int, list[int]]:
    """One candidate through the coordinator's protocol: seed-0 screen, replication, and more seeds
    while the rule asks. `has`: the seeds the champion has stored runs on (the screen's reference; all of
    `reference` when None). Returns (promoted, candidate trials, seeds the champion was compared on)."""
    values = {0: candidate(0)}
    stored = {s: v for s, v in reference.items() if has is None or s in has}
    delta = promotion.screen_gain(task, rules, champion, 0, values[0], stored)
    if not promotion.passes_screen(rules, delta) and rules.seeds > 1:
        return False, 1, [0]
    values.update({s: candidate(s) for s in range(1, rules.seeds)})
    while True:
        decision = promotion.decide(task, rules, champion, values, reference, spread)
        if not decision.more_seeds:
            return decision.promote, len(values), sorted(values)
        start = max(values) + 1
        values.update({s: candidate(s) for s in range(start, start + decision.more_seeds)})


def rule_simulation(candidates: int, run_noise: float, noise: float = 0.01, seed: int = 0,
                    campaign_size: int = 50) -> dict[str, Any]:
    """False promotions (null candidates) and power (a 2-sigma gain) for each rule, and the trials per
    decision. Every `campaign_size` candidates face a new baseline champion (a fresh draw of its three
    seeds: its spread calibrates the `paired` rule); its reruns on extra seeds are counted once per
    campaign (reused after that)."""
    task = load_task(FLAT_TASK)
    null = FlatMetric(noise, run_noise)
    rng = random.Random(seed)
    configs = [(round(rng.uniform(-1, 1), 4), round(rng.uniform(-1, 1), 4)) for _ in range(candidates)]
    bases = [(round(rng.uniform(-1, 0.45), 4), round(rng.uniform(-1, 1), 4))
             for _ in range(math.ceil(candidates / campaign_size))]
    gain = 2 * null.sigma
    out: dict[str, Any] = {"sigma": null.sigma, "planted_gain": gain, "candidates": candidates,
                           "campaign_size": campaign_size, "rules": {}}
    base_seeds = range(3)
    for label, keys in RULES.items():
        rules = PromotionSection(**keys)
        row: dict[str, Any] = {}
        for kind, shift in (("null", 0.0), ("planted", gain)):
            promoted = trials = reruns = 0
            per_campaign: list[int] = []
            tight = [0, 0]  # promoted, candidates: campaigns whose three baseline runs lie within sigma / 2
            champion_has: set[int] = set(base_seeds)
            for i, (x, y) in enumerate(configs):
                if i % campaign_size == 0:
                    bx, by = bases[i // campaign_size]
                    reference = {s: null(bx, by, s) for s in range(64)}
                    mean, std = promotion.summarize({s: reference[s] for s in base_seeds})
                    champion = Champion(id=1, group="baseline", snapshot_id="s", config_signature="s|",
                                        seed_metrics={str(s): reference[s] for s in base_seeds},
                                        metric_mean=mean, metric_std=std, rule="baseline")
                    champion_has = set(base_seeds)
                    per_campaign.append(0)
                won, used, seeds = judge(task, rules, champion, reference, (std, 3),
                                         lambda s, x=x, y=y: null(x, y, s) + shift, champion_has)
                promoted += won
                per_campaign[-1] += won
                if std < null.sigma / 2:
                    tight[0] += won
                    tight[1] += 1
                trials += used
                reruns += len(set(seeds) - champion_has)
                champion_has |= set(seeds)
            lo, hi = wilson(promoted, candidates)
            row[kind] = {"promoted": promoted, "rate": promoted / candidates, "ci95": [lo, hi],
                         "ci95_by_campaign": cluster_interval(per_campaign, campaign_size),
                         "tight_baselines": {"candidates": tight[1], "promoted": tight[0],
                                             "rate": tight[0] / tight[1] if tight[1] else None},
                         "candidate_trials_per_decision": trials / candidates,
                         "champion_reruns_per_decision": reruns / candidates}
        out["rules"][label] = row
    return out


def cluster_interval(promoted: list[int], size: int) -> list[float]:
    """95% interval of a rate measured in campaigns of `size` candidates that share their champion: from
    the spread of the campaigns' own rates (the candidates of one campaign are not independent draws)."""
    rates = [p / size for p in promoted]
    if len(rates) < 2:
        return [0.0, 1.0]
    mean = statistics.fmean(rates)
    half = 1.96 * statistics.stdev(rates) / math.sqrt(len(rates))
    return [max(0.0, mean - half), min(1.0, mean + half)]


# ---- a planted improvement, whole campaigns ------------------------------------------------------

def planted_campaigns(out: Path, campaigns: int, trials: int, run_noise: float, rule: str = "paired",
                      planted_from: float = 0.25) -> dict[str, Any]:
    """Campaigns (the default rule unless told) on the flat task with a 2-sigma gain planted where
    x >= planted_from. A campaign found it if its final champion is there. Whether the search tried the
    region at all is the search's doing, not the rule's: reported apart (campaigns that tried it, and
    the share of those candidates the rule promoted)."""
    metric = FlatMetric(0.01, run_noise)
    gain = round(2 * metric.sigma, 5)
    rng = random.Random(17)
    datas = []
    for i in range(campaigns):
        # Each campaign starts from its own y (which the flat task ignores but its per-run noise does not):
        # the baseline champion's draws differ between campaigns, as they would between real tasks.
        y0 = round(rng.uniform(-1.0, 1.0), 4)
        overrides = [f"task.path={FLAT_TASK}", f"budget.trials={trials}", "coordination.poll_interval_s=0.05",
                     f"task.overrides={{run_noise: {run_noise}, planted_gain: {gain}, "
                     f"planted_from: {planted_from}, y: {y0}}}",
                     f"promotion.rule={rule}", "promotion.min_delta=0"]
        run_comparison([str(CONFIG)], overrides, ["decentralized"], [i], out, progress=_quiet)
        datas.append(load_campaign(out / f"decentralized-s{i}"))
    found, tried, hits, promoted_hits = [], [], 0, 0
    for data in datas:
        final = data.champions.sort_values("id").iloc[-1]
        found.append(float(dict(final["overrides"]).get("x", 0.0)) >= planted_from)
        candidates = data.trials[data.trials["role"] == "candidate"]
        first = candidates.drop_duplicates("proposal_id")  # a proposal's first candidate trial
        inside = [pid for pid, o in zip(first["proposal_id"], first["overrides"])
                  if float(dict(o).get("x", 0.0)) >= planted_from]
        # Only proposals made while the champion was outside the region carry the planted gain.
        entered = data.champions[[float(dict(o).get("x", 0.0)) >= planted_from
                                  for o in data.champions["overrides"]]]
        entry = int(entered["proposal_id"].min()) if not entered.empty else None
        before = [pid for pid in inside if entry is None or pid <= entry]
        tried.append(bool(before))
        hits += len(before)
        promoted_hits += int(entry is not None and entry in before)
    lo, hi = wilson(sum(found), len(found))
    n_tried = sum(tried)
    per_tried = wilson(sum(f for f, t in zip(found, tried) if t), n_tried)
    candidates_per_campaign = [int((d.trials["role"] == "candidate").sum()) for d in datas]
    return {"campaigns": len(found), "found": sum(found), "rate": sum(found) / len(found), "ci95": [lo, hi],
            "planted_gain": gain, "planted_from": planted_from, "sigma": metric.sigma, "trials": trials,
            "candidates_per_campaign": candidates_per_campaign,
            "campaigns_that_tried_it": n_tried,
            "found_when_tried": sum(f for f, t in zip(found, tried) if t) / n_tried if n_tried else None,
            "found_when_tried_ci95": list(per_tried),
            "planted_proposals_before_found": hits, "of_which_promoted": promoted_hits}


def _rule_rows(part3: dict[str, Any], part4: dict[str, Any], part5: Optional[dict[str, Any]],
               targets: dict[str, Any]) -> list[dict[str, Any]]:
    def ci(entry: dict[str, Any]) -> str:
        lo, hi = entry["ci95"]
        return f"[{bl.pct(lo)}, {bl.pct(hi)}]"

    def ci_campaigns(entry: dict[str, Any]) -> str:
        lo, hi = entry["ci95_by_campaign"]
        return f"[{bl.pct(lo)}, {bl.pct(hi)}]"

    rows = []
    off = part4["rules"]["off (1 seed, mean)"]["null"]
    for label, entry in part4["rules"].items():
        null, planted = entry["null"], entry["planted"]
        default = label == DEFAULT_RULE
        rows.append(bl.row(
            f"rule {label}: false promotions per candidate, flat noisy task ({part4['candidates']} simulated "
            f"candidates); promoted with a 2σ gain; trials per decision (candidate + champion reruns)",
            f"{bl.pct(null['rate'])} {ci_campaigns(null)}; {bl.pct(planted['rate'])} {ci(planted)}; "
            f"{null['candidate_trials_per_decision']:.2f} + {null['champion_reruns_per_decision']:.2f} (null), "
            f"{planted['candidate_trials_per_decision']:.2f} + {planted['champion_reruns_per_decision']:.2f} (2σ)",
            f"{bl.pct(off['rate'])} (gate off)" if label != "off (1 seed, mean)" else "—", "—",
            "≤ 1% false, ≥ 80% found" if default else "—",
            targets["default_rule_false_promotions"]["met"] if default else None))
    for label, entry in part3.items():
        rows.append(bl.row(
            f"real campaigns, flat noisy task, rule {label}: false promotions per candidate; trials per decision",
            f"{bl.pct(entry['rate'])} ({entry['promotions']}/{entry['candidates']}, 95% CI {ci(entry)}); "
            f"{entry['trials_per_decision']:.2f}" if entry["rate"] is not None else "—"))
    if part5 is not None:
        rows.append(bl.row(
            f"campaigns that found a planted 2σ gain (default rule, {part5['campaigns']} campaigns of "
            f"{part5['trials']} trials, gain where x >= {part5['planted_from']})",
            f"{bl.pct(part5['rate'])} ({part5['found']}/{part5['campaigns']}, 95% CI {ci(part5)}); "
            f"the search proposed a change there in {part5['campaigns_that_tried_it']}; "
            f"{part5['of_which_promoted']} of its "
            f"{part5['planted_proposals_before_found']} such proposals promoted", "—", "—",
            "≥ 80%", targets["planted_gain_found"]["met"]))
    return rows


def run_rules(sizes: dict[str, Any], work: Path) -> tuple[dict[str, Any], dict[str, Any], Optional[dict[str, Any]],
                                                         dict[str, Any], list[dict[str, Any]]]:
    """Parts 3-5: the promotion rules, in real campaigns, candidate by candidate, and on a planted gain."""
    FlatMetric(0.01, sizes["run_noise"]).verify(work / "verify")
    FlatMetric(0.01, sizes["run_noise"], 0.04, sizes["planted_from"]).verify(work / "verify")
    part4 = rule_simulation(sizes["sim_candidates"], sizes["run_noise"])
    part3 = false_promotions(work / "noise", sizes["noise_trials"], sizes["run_noise"])
    part5 = (planted_campaigns(work / "planted", sizes["planted_campaigns"], sizes["planted_trials"],
                               sizes["run_noise"], planted_from=sizes["planted_from"])
             if sizes["planted_campaigns"] else None)
    default = part4["rules"][DEFAULT_RULE]
    targets = {
        "default_rule_false_promotions": bl.target(
            "the default rule promotes at most 1% of candidates on a flat noisy task (the upper end of the "
            "95% CI from the campaigns' rates)",
            f"{bl.pct(default['null']['rate'])} [{bl.pct(default['null']['ci95_by_campaign'][0])}, "
            f"{bl.pct(default['null']['ci95_by_campaign'][1])}]", default["null"]["ci95_by_campaign"][1] <= 0.01),
        "planted_gain_found": bl.target(
            "campaigns with the default rule find a planted 2σ improvement (≥ 80%)",
            None if part5 is None else part5["rate"], None if part5 is None else part5["rate"] >= 0.8),
    }
    return part3, part4, part5, targets, _rule_rows(part3, part4, part5, targets)


def run(quick: bool = True, **options: Any) -> dict[str, Any]:
    sizes = {**(QUICK if quick else FULL), **options}
    keep = sizes.pop("keep", None)
    only_rules = sizes.pop("only_rules", False)
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="autosci-bench-search-"))
    part3, part4, part5, rule_targets, rule_rows = run_rules(sizes, work)
    measured_rules = {"false_promotions": part3, "rules_simulated": part4, "planted_campaigns": part5}
    if only_rules:
        d = part4["rules"][DEFAULT_RULE]
        summary = (f"default rule: {bl.pct(d['null']['rate'])} false promotions per candidate, "
                   f"{bl.pct(d['planted']['rate'])} of 2σ gains promoted"
                   + (f", planted gain found in {part5['found']}/{part5['campaigns']} campaigns" if part5 else ""))
        return bl.result(NAME, summary, sizes={**sizes, "work_folder": str(work)}, measured=measured_rules,
                         baseline={}, ratios={}, targets=rule_targets, rows=rule_rows)
    common = [f"task.path={bl.ROOT / sizes['task']}", "budget.wall_clock_min=60"]

    datas = _compare(work / "target", ARMS, sizes["seeds"], [*common, f"budget.trials={sizes['trials']}"])
    part1 = trials_to_target(datas, ARMS)
    strong = best_champion(datas)
    start = "{" + ", ".join(f"{k}: {v!r}" for k, v in strong.items()) + "}"
    strong_datas = _compare(work / "strong", ("decentralized", "single"), sizes["strong_seeds"],
                            [*common, f"budget.trials={sizes['strong_trials']}", f"task.overrides={start}"])
    improvements = {arm: [metrics.accepted_improvements(d) for d in strong_datas if d.arm == arm]
                    for arm in ("decentralized", "single")}

    arms = part1["arms"]
    dec = arms["decentralized"]["median"]
    ratio_single = bl.ratio(arms["single"]["median"], dec)
    ratio_random = bl.ratio(arms["random"]["median"], dec)
    imp_dec, imp_single = sum(improvements["decentralized"]), sum(improvements["single"])
    default = part4["rules"][DEFAULT_RULE]

    def above_one(value: Optional[float]) -> Optional[bool]:
        return None if value is None else value > 1

    targets = {
        "fewer_trials_than_single": bl.target(
            "single needs more trials to target than decentralized (paper: 1.9×)", ratio_single,
            above_one(ratio_single)),
        "fewer_trials_than_random": bl.target(
            "random search needs more trials to target than decentralized", ratio_random,
            above_one(ratio_random)),
        "more_improvements_from_strong": bl.target(
            "more accepted improvements than single from a strong champion (paper: 7 vs 0)",
            f"{imp_dec} vs {imp_single}", imp_dec > imp_single),
        **rule_targets,
    }

    def arm_text(arm: str) -> str:
        a = arms[arm]
        return f"{a['median']:g} ({a['spread']}, {a['reached']}/{a['campaigns']} reached)"

    rows = [
        bl.row(f"median trials to target ({part1['target']:.4g}), decentralized", arm_text("decentralized")),
        bl.row("median trials to target, single agent", f"{dec:g}", arm_text("single"),
               bl.fmt_ratio(ratio_single), "> 1× (paper 1.9×)", targets["fewer_trials_than_single"]["met"]),
        bl.row("median trials to target, random search", f"{dec:g}", arm_text("random"),
               bl.fmt_ratio(ratio_random), "> 1×", targets["fewer_trials_than_random"]["met"]),
        bl.row(f"accepted improvements from a strong champion ({sizes['strong_seeds']} campaigns each)",
               f"{imp_dec} {improvements['decentralized']}",
               f"{imp_single} {improvements['single']} (single)", f"{imp_dec} vs {imp_single}",
               "more (paper 7 vs 0)", targets["more_improvements_from_strong"]["met"]),
        *rule_rows,
    ]
    summary = (f"trials to target: decentralized {dec:g}, single {arms['single']['median']:g} "
               f"({bl.fmt_ratio(ratio_single)}), random {arms['random']['median']:g} "
               f"({bl.fmt_ratio(ratio_random)}); improvements from a strong champion {imp_dec} vs "
               f"{imp_single}; default rule: {bl.pct(default['null']['rate'])} false promotions per candidate, "
               f"{bl.pct(default['planted']['rate'])} of 2σ gains promoted")
    return bl.result(NAME, summary, sizes={**sizes, "arms": list(ARMS), "work_folder": str(work)},
                     measured={"trials_to_target": part1, "strong_champion": strong,
                               "improvements_from_strong": improvements, **measured_rules},
                     baseline={"single_median": arms["single"]["median"],
                               "random_median": arms["random"]["median"],
                               "single_improvements_from_strong": imp_single,
                               "gate_off_false_promotion_rate": part4["rules"]["off (1 seed, mean)"]["null"]["rate"]},
                     ratios={"single_over_decentralized": ratio_single,
                             "random_over_decentralized": ratio_random},
                     targets=targets, rows=rows)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="task folder (default tasks/diabetes)")
    parser.add_argument("--seeds", type=int, help="campaign seeds per arm for trials to target")
    parser.add_argument("--trials", type=int, help="trial budget of each trials-to-target campaign")
    parser.add_argument("--strong-seeds", dest="strong_seeds", type=int)
    parser.add_argument("--strong-trials", dest="strong_trials", type=int)
    parser.add_argument("--noise-trials", dest="noise_trials", type=int)
    parser.add_argument("--run-noise", dest="run_noise", type=float)
    parser.add_argument("--sim-candidates", dest="sim_candidates", type=int,
                        help="simulated candidates per rule and case (part 4)")
    parser.add_argument("--planted-campaigns", dest="planted_campaigns", type=int)
    parser.add_argument("--planted-trials", dest="planted_trials", type=int)
    parser.add_argument("--planted-from", dest="planted_from", type=float,
                        help="the planted gain applies where x >= this (default 0.25)")
    parser.add_argument("--only-rules", dest="only_rules", action="store_true",
                        help="only parts 3-5 (the promotion rules)")
    parser.add_argument("--keep", help="keep the campaigns in this folder (and resume them there)")


if __name__ == "__main__":
    sys.exit(bl.main(run, __doc__, _options))
