"""The `autosci` command: run, coordinate, status, log, show, rerun, doctor."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console

from .config import ConfigError, load_config
from .task import TaskError, load_task

# Piped output (CI logs, `make run | tee`) gets a wide console instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)

API_KEY_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo")
PACKAGES = ("submitit", "sqlmodel", "pydantic", "anthropic", "omegaconf", "numpy", "scipy", "pandas", "rich",
            "scikit-learn", "torch")


def _latest_campaign(root: Path = Path("runs")) -> Optional[Path]:
    found = sorted(root.glob("*/state.db"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return found[-1].parent if found else None


def _campaign_folder(arg: Optional[str]) -> Path:
    folder = Path(arg) if arg else (Path(os.environ["AUTOSCI_CAMPAIGN"]) if "AUTOSCI_CAMPAIGN" in os.environ
                                    else _latest_campaign())
    if folder is None or not (folder / "state.db").is_file():
        raise SystemExit(f"autosci: no campaign database in {folder or 'runs/'} "
                         "(pass the campaign folder, or set AUTOSCI_CAMPAIGN)")
    return folder


def _open_read_only(folder: Path):  # noqa: ANN202 - Store, imported lazily to keep start-up fast
    from .state import Store

    return Store(folder, read_only=True, create=False)


def _load(args: argparse.Namespace) -> Optional[tuple[Any, Any]]:
    """The config (YAML files in order, then key=value overrides) and its task; None after printing
    the one-line error for a bad file, key, value or task."""
    try:
        files = [args.config] + [a for a in args.overrides if "=" not in a and a.endswith((".yaml", ".yml"))]
        config = load_config(files, [a for a in args.overrides if a not in files])
        return config, load_task(config.task.path)
    except (ConfigError, TaskError) as exc:
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return None


class _LeaseTaker:
    """Takes the campaign's coordinator lease when the coordinator opens its store (before anything
    is written), and keeps it alive with a heartbeat: every command that coordinates holds it."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.lease: Any = None
        self.beat: Any = None

    def __call__(self, store: Any) -> Any:
        from .state.lease import CoordinatorLease

        self.lease = CoordinatorLease(store, ttl_s=self.ttl_s)
        self.lease.acquire()
        return self.lease

    def start(self) -> None:
        from .state.lease import Heartbeat

        self.beat = Heartbeat(self.lease, interval_s=max(1.0, self.ttl_s / 4))
        self.beat.start()

    def release(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        if self.lease is not None:
            self.lease.release()


def cmd_run(args: argparse.Namespace) -> int:
    loaded = _load(args)
    if loaded is None:
        return 2
    config, task = loaded
    from .coordination.coordinator import Coordinator
    from .state.lease import LeaseHeld
    from .status import render_status

    folder = config.campaign_folder()
    console.print(f"campaign folder: {folder}", highlight=False, soft_wrap=True)
    live_view = console.is_terminal and not args.quiet
    last = {"t": 0.0, "line": ""}

    def on_tick(coordinator: Coordinator) -> None:
        if live_view:
            live.update(render_status(coordinator.store))
            return
        now = time.monotonic()
        c = coordinator.store.campaign()
        line = f"[{c.status}] trials {c.trials_submitted} submitted / {c.trials_finished} finished, " \
               f"promotions {c.promotions}"
        if line != last["line"] and now - last["t"] > 2:
            console.print(line, highlight=False, markup=False)
            last.update(t=now, line=line)

    taker = _LeaseTaker(args.lease_ttl)
    try:
        coordinator = Coordinator(config, folder, task=task, on_tick=on_tick, lease=taker)
    except LeaseHeld as exc:
        err.print(f"autosci: {exc}", highlight=False, soft_wrap=True)
        return 3
    taker.start()
    try:
        if live_view:
            from rich.live import Live

            with Live(render_status(coordinator.store), console=console, refresh_per_second=2) as live:
                summary = coordinator.run()
        else:
            summary = coordinator.run()
    except TaskError as exc:  # e.g. the task's data could not be prepared
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    finally:
        taker.release()
    console.print(render_status(coordinator.store))
    console.print(f"campaign {summary.status}: {summary.trials} trials, {summary.promotions} promotion(s); "
                  f"champion {summary.champion_metric} (baseline {summary.baseline_metric})", highlight=False)
    console.print(f"campaign folder: {summary.folder}", highlight=False, soft_wrap=True)
    return 0 if summary.status == "finished" else 1


def cmd_coordinate(args: argparse.Namespace) -> int:
    """The long-lived coordinator (what sbatch/launch_campaign.sh runs): lease, signals, resume, requeue."""
    import signal as signals

    from .coordination.coordinator import Coordinator
    from .state.lease import LeaseHeld
    from .status import render_status

    loaded = _load(args)
    if loaded is None:
        return 2
    config, task = loaded
    # A fixed folder (no timestamp), so that a requeued or restarted coordinator finds its campaign.
    folder = Path(config.campaign.folder) if config.campaign.folder else Path(config.campaign.root) / config.campaign.name
    taker = _LeaseTaker(args.lease_ttl)
    try:
        coordinator = Coordinator(config, folder, task=task, lease=taker, agent_processes=not args.inline_agents)
    except LeaseHeld as exc:
        err.print(f"autosci: {exc}", highlight=False, soft_wrap=True)
        return 3
    taker.start()
    for name in ("SIGUSR1", "SIGTERM", "SIGINT"):
        signals.signal(getattr(signals, name), lambda signum, _f: coordinator.request_stop(signals.Signals(signum).name))
    console.print(f"coordinator for {folder} ({'resumed' if coordinator.resumed else 'new campaign'})",
                  highlight=False, soft_wrap=True)
    try:
        summary = coordinator.run()
    except TaskError as exc:
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    finally:
        taker.release()
    if summary.status in ("finished", "failed"):
        with open(folder / "report.txt", "w") as handle:
            Console(file=handle, width=140).print(render_status(coordinator.store))
        console.print(f"campaign {summary.status}: {summary.trials} trials, {summary.promotions} promotion(s); "
                      f"report in {folder / 'report.txt'}", highlight=False, soft_wrap=True)
        return 0 if summary.status == "finished" else 1
    job = os.environ.get("SLURM_JOB_ID")
    console.print(f"coordinator stopped ({coordinator.stop_reason}); state saved, lease released", highlight=False)
    if job and not args.no_requeue:
        from .state import emit

        with coordinator.store.write() as session:
            emit(session, "campaign.requeued", "campaign", 1, slurm_job_id=job, reason=coordinator.stop_reason)
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        console.print(f"scontrol requeue {job}: {'ok' if result.returncode == 0 else result.stderr.strip()}",
                      highlight=False)
        return 0 if result.returncode == 0 else 4
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import render_status

    console.print(render_status(_open_read_only(_campaign_folder(args.folder))))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from .status import log_table

    store = _open_read_only(_campaign_folder(args.campaign))
    console.print(log_table(store, team=args.team, status=args.status, proposal=args.proposal, limit=args.limit))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .status import show

    store = _open_read_only(_campaign_folder(args.campaign))
    try:
        console.print(show(store, args.ref), highlight=False, soft_wrap=True)
    except (KeyError, ValueError) as exc:
        err.print(f"autosci: {exc}")
        return 2
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from .execution.rerun import rerun

    folder = _campaign_folder(args.campaign)
    try:
        done = rerun(folder, args.trial, seed=args.seed, executor_kind=args.executor, timeout_s=args.timeout)
    except KeyError as exc:
        err.print(f"autosci: {exc.args[0]}")
        return 2
    logged = f"{done.trial.metric!r}" if done.trial.metric is not None else f"failed ({done.trial.failure_class})"
    console.print(f"trial {done.trial.id} seed {done.trial.seed}: logged metric {logged}", highlight=False)
    if done.result is None:
        console.print(f"rerun seed {done.seed}: no result: {done.failure}", highlight=False)
        return 1
    new = f"{done.result.metric!r}" if done.result.metric is not None else f"failed ({done.result.failure_class})"
    verdict = "identical" if done.identical else "differs"
    console.print(f"rerun seed {done.seed}: metric {new} ({verdict}); folder {done.folder}", highlight=False,
                  soft_wrap=True)
    return 0


def cmd_task_check(args: argparse.Namespace) -> int:
    from .taskcheck import check_task, render

    report = check_task(args.task, seed=args.seed, folder=Path(args.folder) if args.folder else None,
                        keep=args.keep, time_limit_s=args.timeout)
    console.print(render(report), highlight=False, markup=False, soft_wrap=True)
    return report.exit_code


def cmd_doctor(args: argparse.Namespace) -> int:
    from .state.filesystem import describe, journal_mode_for

    ok = True
    console.print("[bold]packages[/bold]")
    for name in PACKAGES:
        try:
            console.print(f"  {name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            optional = name in ("scikit-learn", "torch")
            ok = ok and optional
            console.print(f"  {name} missing" + (" (optional)" if optional else ""))
    console.print("[bold]SLURM commands[/bold]")
    for command in SLURM_COMMANDS:
        path = shutil.which(command)
        console.print(f"  {command}: {path or 'not on PATH'}")
    folder = Path(args.folder)
    console.print("[bold]campaign folder[/bold]")
    console.print(f"  {folder}: {describe(folder)} -> journal mode {journal_mode_for(folder)}")
    console.print("[bold]API keys[/bold]")
    for var in API_KEY_VARIABLES:
        # Never print the key, nor any part of it.
        console.print(f"  {var}: {'set' if os.environ.get(var) else 'not set'}")
    return 0 if ok else 1


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the same task under several coordination modes and seeds, one matched budget, one report."""
    from .compare import run_comparison
    from .state.lease import LeaseHeld

    files = [args.config] + [a for a in args.overrides if "=" not in a and a.endswith((".yaml", ".yml"))]
    overrides = [a for a in args.overrides if a not in files]
    try:
        report = run_comparison(files, overrides, [a.strip() for a in args.arms.split(",") if a.strip()],
                                list(range(args.seeds)), Path(args.out), parallel=args.parallel, target=args.target,
                                progress=lambda line: console.print(line, highlight=False, markup=False))
    except (ConfigError, TaskError) as exc:
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    except LeaseHeld as exc:
        err.print(f"autosci: {exc}", highlight=False, soft_wrap=True)
        return 3
    console.print(f"comparison report: {report}", highlight=False, soft_wrap=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML report of one or several campaigns (read-only), and the log as CSV."""
    from .report import ReportError, export_log, load_campaign, write_report

    folders = [Path(f) for f in args.campaigns]
    out = Path(args.out) if args.out else folders[0] / "report.html"
    try:
        path = write_report(folders, out, target=args.target)
        if args.export:
            for folder in folders:
                dest = Path(args.export) / folder.name if len(folders) > 1 else Path(args.export)
                for line in export_log(load_campaign(folder), dest):
                    console.print(line, highlight=False, soft_wrap=True)
    except ReportError as exc:
        err.print(f"autosci: {exc}", highlight=False, soft_wrap=True)
        return 2
    console.print(str(path), highlight=False, soft_wrap=True)
    return 0


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of one or several campaigns (read-only)")
    p.add_argument("campaigns", nargs="+", metavar="CAMPAIGN", help="campaign folder(s); several are compared")
    p.add_argument("--out", help="the HTML file (default: <first campaign>/report.html)")
    p.add_argument("--target", type=float, help="metric target for trials-to-target (default: half-way from the "
                                                 "baseline to the best final champion)")
    p.add_argument("--export", metavar="DIR", help="also write the log as CSV (and Parquet with pyarrow) here")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autosci", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run a campaign to its budget, with a live view")
    p.add_argument("config", help="campaign YAML (configs/campaign/*.yaml)")
    p.add_argument("overrides", nargs="*",
                   help="more YAML files merged in order (e.g. configs/cluster/h100_example.yaml), "
                        "then key=value overrides, e.g. budget.trials=60")
    p.add_argument("--quiet", action="store_true", help="progress lines instead of the live view")
    p.add_argument("--lease-ttl", type=float, default=120.0, help="seconds a silent coordinator keeps its lease")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("coordinate", help="the long-lived coordinator of a campaign (resumes its folder)")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("overrides", nargs="*", help="more YAML files, then key=value overrides")
    p.add_argument("--lease-ttl", type=float, default=120.0, help="seconds a silent coordinator keeps its lease")
    p.add_argument("--no-requeue", action="store_true", help="on a stop signal, do not requeue the Slurm job")
    p.add_argument("--inline-agents", action="store_true",
                   help="run the agents inside the coordinator process instead of one process each")
    p.set_defaults(func=cmd_coordinate)
    p = sub.add_parser("status", help="the campaign's picture, read-only, while it runs")
    p.add_argument("folder", nargs="?", help="campaign folder (default: the newest under runs/)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("log", help="list trials")
    p.add_argument("-C", "--campaign", help="campaign folder (default: the newest under runs/)")
    p.add_argument("--team")
    p.add_argument("--status", choices=["created", "submitting", "submitted", "succeeded", "failed"])
    p.add_argument("--proposal", type=int)
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(func=cmd_log)
    p = sub.add_parser("show", help="one trial (12), proposal (p3) or team (team-1) with its story")
    p.add_argument("ref")
    p.add_argument("-C", "--campaign", help="campaign folder (default: the newest under runs/)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("rerun", help="re-run one trial from the log in a fresh folder")
    p.add_argument("trial", type=int)
    p.add_argument("--seed", type=int, help="another seed (default: the logged one)")
    p.add_argument("--executor", choices=["local", "slurm"], help="default: the campaign's")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the result")
    p.add_argument("-C", "--campaign", help="campaign folder (default: the newest under runs/)")
    p.set_defaults(func=cmd_rerun)
    p = sub.add_parser("compare", help="the same task under several modes and seeds, matched budget, one report")
    p.add_argument("config", help="campaign YAML: its budget is every arm's budget")
    p.add_argument("overrides", nargs="*", help="more YAML files, then key=value overrides (applied to every arm)")
    p.add_argument("--arms", default="single,central,decentralized",
                   help="comma-separated: decentralized, central, single, random (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="campaign seeds per arm (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for the campaigns, their logs and report.html")
    p.add_argument("--parallel", type=int, default=1, help="campaigns run at once (default: %(default)s)")
    p.add_argument("--target", type=float, help="metric target for trials-to-target (default: half-way "
                                                  "from the baseline to the best champion found)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("doctor", help="check packages, SLURM, the filesystem and API keys")
    p.add_argument("folder", nargs="?", default="runs", help="where campaign folders will live")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("task", help="task authoring: `autosci task check tasks/NAME`")
    task_sub = p.add_subparsers(dest="task_command", required=True)
    p = task_sub.add_parser("check", help="validate a task folder and run its champion once (seed 0)")
    p.add_argument("task", help="the task folder (with task.yaml)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folder", help="prepare and run in this campaign folder (kept) instead of a temporary one")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    p.add_argument("--timeout", type=float, help="seconds for the champion run (default: the task's time_limit_s)")
    p.set_defaults(func=cmd_task_check)
    add_report_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
