"""Run the benchmarks, record the machine, write the results table (markdown + JSON). `make bench` runs this.

    python benchmarks/run_all.py                                  # every benchmark, quick sizes
    python benchmarks/run_all.py --full                           # the full sizes (much longer)
    python benchmarks/run_all.py --only bench_slots,bench_scheduler
    python benchmarks/run_all.py --option bench_coordinator.sizes=1000,10000 --option bench_slots.slots=4

Each entry of BENCHMARKS names a module `benchmarks/<name>.py` that exposes

    def run(quick: bool = True, **options) -> dict

returning the dict described in `benchlib.py` (name, status, summary, sizes, measured, baseline,
ratios, targets {key: {target, value, met}}, and table rows). A listed module that does not exist
is reported as "not present"; one that raises or overruns its time limit as "error". Every module
runs in its own process (a crash, a hang or a leaked thread cannot spoil the next one) and is
timed. Results go to `benchmarks/results/results.json` and `results.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import benchlib as bl  # noqa: E402

#: In the order they run.
BENCHMARKS = ["bench_slots", "bench_coordinator", "bench_scheduler", "bench_search", "bench_first_promotion"]
#: A benchmark that runs longer than this is stopped and reported as an error (bench_search at its quick
#: sizes, the promotion rules' 20 planted-gain campaigns of 60 trials included, takes about half of it).
TIME_LIMIT_S = 3600
RESULTS = HERE / "results"


# ---- one benchmark, in a child process ---------------------------------------------------------------


def child(name: str, quick: bool, options: dict[str, Any], out: Path) -> int:
    """Import `name`, call its run(), write the dict (or the error) to `out`."""
    import importlib

    try:
        module = importlib.import_module(name)
        res = module.run(quick=quick, **options)
    except Exception as exc:  # the table must say what failed, and the run must go on
        res = {"name": name, "status": "error", "summary": f"error: {type(exc).__name__}: {exc}"[:500],
               "traceback": traceback.format_exc()[-4000:], "rows": [], "targets": {}}
    out.write_text(json.dumps(res, default=str))
    return 0


def run_one(name: str, quick: bool, options: dict[str, Any], time_limit_s: float) -> dict[str, Any]:
    if not (HERE / f"{name}.py").exists():
        return {"name": name, "module": name, "status": "not present", "summary": f"not present: benchmarks/{name}.py",
                "rows": [], "targets": {}, "seconds": 0.0}
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--child-out", str(out),
            "--child-options", json.dumps(options)] + ([] if quick else ["--full"])
    began = time.monotonic()
    res: dict[str, Any]
    try:
        # Its own session, so that a benchmark overrunning its limit is stopped with all it started.
        proc = subprocess.Popen(argv, cwd=bl.ROOT, start_new_session=True)
        try:
            proc.wait(timeout=time_limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            res = {"name": name, "status": "error", "summary": f"error: still running after {time_limit_s:g} s",
                   "rows": [], "targets": {}}
        else:
            text = out.read_text() if out.exists() else ""
            failed = {"name": name, "status": "error", "rows": [], "targets": {},
                      "summary": f"error: exited {proc.returncode} without a result"}
            res = json.loads(text) if text else failed
    finally:
        out.unlink(missing_ok=True)
    res["module"] = name
    res["seconds"] = round(time.monotonic() - began, 1)
    return res


# ---- the table --------------------------------------------------------------------------------------


def _met(value: Optional[bool]) -> str:
    return "—" if value is None else "yes" if value else "**no**"


def table_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a result brings to the table; made from its targets, or its summary, when it has none."""
    if res.get("rows"):
        return list(res["rows"])
    if res.get("status") == "ok" and res.get("targets"):
        return [bl.row(key, _value(t.get("value")), target_text=t.get("target", "—"), met=t.get("met"))
                for key, t in res["targets"].items()]
    return [bl.row(res.get("summary", res.get("status", "?")), "—")]


def _value(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def not_met(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"benchmark": r.get("name", r["module"]), "target": t.get("target", key), "value": _value(t.get("value"))}
            for r in results for key, t in (r.get("targets") or {}).items() if t.get("met") is False]


def markdown(results: list[dict[str, Any]], machine: dict[str, Any], command: str, total_s: float) -> str:
    m = machine
    lines = [f"# Benchmarks (`{command}`)", "",
             f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; "
             f"Python {m['python']}, SQLite {m['sqlite']}" + (f", {m['slurm']}" if m.get("slurm") else "")
             + f"; commit {m['git_commit']}; load average at start {m.get('load_average')}. "
             f"Total {total_s / 60:.1f} min.", "",
             "| benchmark | measured | baseline | ratio | target | met |", "| --- | --- | --- | --- | --- | --- |"]
    for res in results:
        title = f"{res.get('name', res['module'])} ({res['seconds']:g} s)"
        for i, r in enumerate(table_rows(res)):
            cells = [f"**{title}**: {r['metric']}" if i == 0 else r["metric"], r["measured"], r["baseline"],
                     r["ratio"], r["target"], _met(r["met"])]
            lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    lines += ["", "Summaries:", ""]
    lines += [f"- **{r.get('name', r['module'])}** ({r['status']}): {r.get('summary', '')}" for r in results]
    sizes = [f"- {r.get('name', r['module'])}: `{json.dumps(r['sizes'], default=str)}`" for r in results
             if r.get("sizes")]
    if sizes:
        lines += ["", "Sizes:", "", *sizes]
    missed = not_met(results)
    lines += ["", "Targets not met:" if missed else "Every judged target was met.", ""]
    lines += [f"- {t['benchmark']}: {t['target']} (measured {t['value']})" for t in missed]
    return "\n".join(lines).rstrip() + "\n"


# ---- main -------------------------------------------------------------------------------------------


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """`module.key=value` -> {module: {key: value}}; values are JSON where they parse, else text."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        dotted, sep, raw = item.partition("=")
        module, dot, key = dotted.partition(".")
        if not sep or not dot:
            raise SystemExit(f"--option {item!r}: expected module.key=value")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(module, {})[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full sizes instead of the quick defaults")
    parser.add_argument("--only", help="comma-separated benchmark modules (default: all of BENCHMARKS)")
    parser.add_argument("--option", action="append", default=[], help="module.key=value, passed to its run()")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for results.json and results.md")
    parser.add_argument("--time-limit-s", type=float, default=TIME_LIMIT_S, help="per benchmark")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, not args.full, json.loads(args.child_options), args.child_out)
    names = args.only.split(",") if args.only else BENCHMARKS
    options = parse_options(args.option)
    command = "make bench" if not (args.only or args.option or args.full) else " ".join(["python", *sys.argv])
    machine = bl.machine()
    began = time.monotonic()
    results = []
    for name in names:
        print(f"== {name}", flush=True)
        res = run_one(name, not args.full, options.get(name, {}), args.time_limit_s)
        print(f"   {res['status']} in {res['seconds']:g} s: {res.get('summary', '')}", flush=True)
        results.append(res)
    total = time.monotonic() - began
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": command, "machine": machine, "total_seconds": round(total, 1), "quick": not args.full,
              "benchmarks": results, "targets_not_met": not_met(results)}
    (args.out / "results.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out / "results.md").write_text(markdown(results, machine, command, total))
    print(f"\n{(args.out / 'results.md').read_text()}")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'} ({total / 60:.1f} min)")
    return 0 if all(r["status"] in ("ok", "skipped", "not present") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
