"""The `autosci` command.

Every command that reads a campaign (status, log, show, rerun, report) takes its folder the same way:
as a positional folder before anything else it takes, or as `-C FOLDER`, or, given neither, the newest
campaign under runs/ ($AUTOSCI_CAMPAIGN when set). `show` and `rerun` take one more positional, what to
show or which trial to rerun, always last: `autosci show runs/X 3` and `autosci show -C runs/X 3` are
the same. A form the grammar does not take is answered with one line saying what to type (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from rich.console import Console

from .config import ConfigError, load_config
from .layout import CampaignLayout
from .task import TaskError, load_task

# Piped output (CI logs, `make run | tee`) gets a wide console instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)  # an error is one line, however narrow the terminal

def _checked(convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type: `convert`, then `ok`, else one line saying the argument is not `what`."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_count = _checked(int, lambda v: v >= 1, "a whole number of at least 1")
_seed = _checked(int, lambda v: v >= 0, "a whole number of at least 0")
_seconds = _checked(float, lambda v: math.isfinite(v) and v > 0, "a number of seconds above 0")
_finite = _checked(float, math.isfinite, "a finite number")


API_KEY_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo")
PACKAGES = ("submitit", "sqlmodel", "pydantic", "anthropic", "omegaconf", "numpy", "scipy", "pandas", "rich",
            "scikit-learn", "torch")


def _latest_campaign(root: Path = Path("runs")) -> Optional[Path]:
    found = sorted(root.glob(f"*/{CampaignLayout.DATABASE}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return found[-1].parent if found else None


def _campaign_folder(arg: Optional[str]) -> Path:
    folder = Path(arg) if arg else (Path(os.environ["AUTOSCI_CAMPAIGN"]) if "AUTOSCI_CAMPAIGN" in os.environ
                                    else _latest_campaign())
    if folder is None or not CampaignLayout(folder).database.is_file():
        raise SystemExit(f"autosci: no campaign database in {folder or 'runs/'} "
                         "(pass the campaign folder, or set AUTOSCI_CAMPAIGN)")
    return folder


class Misuse(Exception):
    """A command line the grammar does not take; the message says what to type instead."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line that shows the command's form instead of a bare complaint."""

    def error(self, message: str) -> NoReturn:
        if self.prog == "autosci":  # no command, or one that does not exist
            names = ", ".join(name for name, _, _ in COMMANDS)
            self.exit(2, f"autosci: {message}; type autosci COMMAND, one of: {names} (autosci --help)\n")
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        self.exit(2, f"{self.prog}: {message}; type: {usage}\n")


#: The commands that read a campaign -> what each takes after its folder (shown in the one-line hints).
READS_A_CAMPAIGN = {"status": "", "log": "", "show": "REF", "rerun": "TRIAL", "report": ""}
#: What the one-line hints say a REF or TRIAL can be.
EXAMPLES = {"REF": "a trial (12), proposal (p3), team (team-1) or champion (c2, champion)",
            "TRIAL": "a trial number, as `autosci log` lists it"}


def _looks_like_folder(word: str) -> bool:
    return os.sep in word or CampaignLayout(Path(word)).database.is_file()


def _place_folder(command: str, words: list[str], option_folders: list[str]) -> tuple[list[str], Optional[str]]:
    """The campaign folders and the one further word (show's REF, rerun's TRIAL) of a command line, from
    its positional words and its -C options; raises `Misuse` naming the form to type instead."""
    wants = READS_A_CAMPAIGN[command]
    if wants:
        if not words:
            raise Misuse(f"say which {wants}: autosci {command} [FOLDER] {wants}, {wants} being {EXAMPLES[wants]}")
        *given, last = words
        if not given and _looks_like_folder(last):
            raise Misuse(f"say which {wants} in {last}: autosci {command} {last} {wants}, {wants} being "
                         f"{EXAMPLES[wants]}")
        if len(given) == 1 and _looks_like_folder(last) and not _looks_like_folder(given[0]):
            raise Misuse(f"the folder comes first: autosci {command} {last} {given[0]}")
    else:
        given, last = words, None
    if command != "report" and len(given) > 1:
        folder = next((word for word in given if _looks_like_folder(word)), given[0])
        raise Misuse(f"one campaign folder at a time: autosci {command} {folder}" + (f" {last}" if last else ""))
    folders = list(dict.fromkeys(given + option_folders))
    if command != "report" and len(folders) > 1:
        raise Misuse(f"two campaign folders given ({folders[0]}, {folders[1]}): give one, as "
                     f"autosci {command} {folders[0]}" + (f" {last}" if last else ""))
    return folders, last


def _trial_number(word: str, folder: Optional[str]) -> int:
    try:
        return int(word.lstrip("t"))
    except ValueError:
        where = f"{folder} " if folder else ""
        raise Misuse(f"a trial is rerun by its number, as `autosci log` lists it: autosci rerun {where}12") from None


def _open_read_only(folder: Path):  # noqa: ANN202 - Store, imported lazily to keep start-up fast
    from .state import Store

    return Store(folder, read_only=True, create=False)


def _load(args: argparse.Namespace) -> Optional[tuple[Any, Any]]:
    """The config (YAML files in order, then key=value overrides) and its task; None after printing
    the one-line error for a bad file, key, value or task."""
    try:
        files = [args.config] + [a for a in args.overrides if "=" not in a and a.endswith((".yaml", ".yml"))]
        config = load_config(files, [a for a in args.overrides if a not in files])
        task = load_task(config.task.path)
        from .execution.sandbox import campaign_sandbox

        campaign_sandbox(config, config.campaign_folder())  # a sandbox asked for that does not work: one line
        return config, task
    except (ConfigError, TaskError) as exc:
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return None


def _launch_problem(config: Any, task: Any) -> bool:
    """Check the task's overrides, the API key and the cluster before the campaign folder exists;
    True after printing the one-line error of a mistake."""
    from .preflight import check_launch

    try:
        check_launch(config, task)
    except (ConfigError, TaskError) as exc:
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return True
    return False


class _WithoutSbatchErrors:
    """sys.stderr, less the `sbatch: error:` lines submitit copies there when sbatch refuses a job: the
    refusal reaches the user as one line of ours instead (everything else passes through)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        lines = [line for line in text.splitlines() if line.strip()]
        if lines and all(line.startswith("sbatch: ") for line in lines):
            self._dropped = True
            return len(text)
        if self._dropped and text == "\n":
            self._dropped = False
            return len(text)
        self._dropped = False
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _refused(exc: Exception, config: Any, folder: Path) -> int:
    """The one line for a submission sbatch refused mid-campaign (the folder is kept, resumable)."""
    from .preflight import submission_line

    err.print(f"autosci: {submission_line(exc, config)}; the campaign folder {folder} is kept: fix the "
              f"setting and run again with campaign.folder={folder} to resume",
              highlight=False, markup=False, soft_wrap=True)
    return 2


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
    if _launch_problem(config, task):
        return 2
    from .coordination.coordinator import Coordinator
    from .execution.slurm import SubmissionError
    from .state.lease import LeaseHeld
    from .state.lifecycle import CampaignStatus
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
    except (ConfigError, TaskError) as exc:
        taker.release()
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    taker.start()
    try:
        with contextlib.redirect_stderr(_WithoutSbatchErrors(sys.stderr)):
            if live_view:
                from rich.live import Live

                with Live(render_status(coordinator.store), console=console, refresh_per_second=2) as live:
                    summary = coordinator.run()
            else:
                summary = coordinator.run()
    except TaskError as exc:  # e.g. the task's data could not be prepared
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    except SubmissionError as exc:
        return _refused(exc, config, folder)
    finally:
        taker.release()
    console.print(render_status(coordinator.store))
    console.print(f"campaign {summary.status}: {summary.trials} trials, {summary.promotions} promotion(s); "
                  f"champion {summary.champion_metric} (baseline {summary.baseline_metric})", highlight=False)
    console.print(f"campaign folder: {summary.folder}", highlight=False, soft_wrap=True)
    return 0 if summary.status == CampaignStatus.FINISHED else 1


def cmd_coordinate(args: argparse.Namespace) -> int:
    """The long-lived coordinator (what sbatch/launch_campaign.sh runs): lease, signals, resume, requeue."""
    import signal as signals

    from .coordination.coordinator import Coordinator
    from .state.lease import LeaseHeld
    from .state.lifecycle import CampaignStatus
    from .status import render_status

    loaded = _load(args)
    if loaded is None:
        return 2
    config, task = loaded
    # A fixed folder (no timestamp), so that a requeued or restarted coordinator finds its campaign.
    folder = Path(config.campaign.folder) if config.campaign.folder else Path(config.campaign.root) / config.campaign.name
    if not CampaignLayout(folder).database.exists() and _launch_problem(config, task):  # a resumed one was checked
        return 2
    from .llm.served import ServeError
    from .execution.slurm import SubmissionError

    taker = _LeaseTaker(args.lease_ttl)
    try:
        coordinator = Coordinator(config, folder, task=task, lease=taker, agent_processes=not args.inline_agents)
    except LeaseHeld as exc:
        err.print(f"autosci: {exc}", highlight=False, soft_wrap=True)
        return 3
    except (ConfigError, TaskError, ServeError) as exc:
        taker.release()
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    taker.start()
    for name in ("SIGUSR1", "SIGTERM", "SIGINT"):
        signals.signal(getattr(signals, name), lambda signum, _f: coordinator.request_stop(signals.Signals(signum).name))
    console.print(f"coordinator for {folder} ({'resumed' if coordinator.resumed else 'new campaign'})",
                  highlight=False, soft_wrap=True)
    try:
        with contextlib.redirect_stderr(_WithoutSbatchErrors(sys.stderr)):
            summary = coordinator.run()
    except TaskError as exc:
        err.print(f"[red]autosci: {exc}[/red]", highlight=False, soft_wrap=True)
        return 2
    except SubmissionError as exc:
        return _refused(exc, config, folder)
    finally:
        taker.release()
    if summary.status in (CampaignStatus.FINISHED, CampaignStatus.FAILED):
        with open(CampaignLayout(folder).report_text, "w") as handle:
            Console(file=handle, width=140).print(render_status(coordinator.store))
        console.print(f"campaign {summary.status}: {summary.trials} trials, {summary.promotions} promotion(s); "
                      f"report in {folder / 'report.txt'}", highlight=False, soft_wrap=True)
        return 0 if summary.status == CampaignStatus.FINISHED else 1
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

    store = _open_read_only(_campaign_folder(args.folder))
    console.print(log_table(store, team=args.team, status=args.status, proposal=args.proposal, limit=args.limit))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .status import show

    folder = _campaign_folder(args.folder)
    store = _open_read_only(folder)
    try:
        if args.transcript:
            return _show_transcripts(store, folder, args.ref)
        console.print(show(store, args.ref), highlight=False, soft_wrap=True)
    except (KeyError, ValueError) as exc:
        err.print(f"autosci: {exc.args[0] if exc.args else exc}", highlight=False, markup=False, soft_wrap=True)
        return 2
    return 0


def _show_transcripts(store: Any, folder: Path, ref: str) -> int:
    """The model conversations behind a proposal (`p3`) or a trial's proposal (`12`)."""
    from .llm.transcripts import behind_proposal, render
    from .state.models import Proposal, Trial
    from .status import parse_ref

    kind, number = parse_ref(ref)
    if kind not in ("proposal", "trial"):
        raise ValueError(f"--transcript shows the conversations behind a proposal (p3) or a trial (12), not {ref}")
    with store.read() as session:
        if kind == "proposal":
            proposal = session.get(Proposal, number)
        else:
            trial = session.get(Trial, number)
            if trial is None:
                raise KeyError(f"no trial {ref}")
            proposal = session.get(Proposal, trial.proposal_id) if trial.proposal_id else None
            if proposal is None:
                raise KeyError(f"trial {ref} is a {trial.role} trial: no proposal, no conversation behind it")
    if proposal is None or proposal.id is None:
        raise KeyError(f"no proposal {ref}")
    paths = behind_proposal(folder, proposal.id, proposal.title)
    if not paths:
        err.print(f"autosci: no transcript of a conversation behind p{proposal.id} in {folder}/transcripts "
                  "(offline and random agents have none)", highlight=False, markup=False, soft_wrap=True)
        return 1
    for path in paths:
        console.print(render(path), highlight=False, markup=False, soft_wrap=True)
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from .execution.rerun import rerun

    folder = _campaign_folder(args.folder).resolve()
    try:
        done = rerun(folder, args.trial, seed=args.seed, executor_kind=args.executor, timeout_s=args.timeout)
    except KeyError as exc:
        err.print(f"autosci: {exc.args[0]}")
        return 2
    logged = f"{done.trial.metric!r}" if done.trial.metric is not None else f"failed ({done.trial.failure_class})"
    console.print(f"trial {done.trial.id} seed {done.trial.seed}: logged metric {logged}", highlight=False)
    if not done.ran:  # not a disagreement: the rerun could not run
        err.print(f"autosci: rerun of trial {done.trial.id} seed {done.seed} produced no metric: "
                  f"{done.reason}; folder {done.folder}", highlight=False, markup=False, soft_wrap=True)
        return 1
    assert done.result is not None
    verdict = "identical" if done.identical else "differs"
    console.print(f"rerun seed {done.seed}: metric {done.result.metric!r} ({verdict}); folder {done.folder}",
                  highlight=False, soft_wrap=True)
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
    from .preflight import controller

    answers, detail = controller()
    state = {True: f"answers (partitions: {detail})", False: f"does not answer: {detail}",
             None: detail}[answers]
    console.print(f"  controller: {state}", highlight=False, markup=False, soft_wrap=True)
    folder = Path(args.folder)
    console.print("[bold]campaign folder[/bold]")
    console.print(f"  {folder}: {describe(folder)} -> journal mode {journal_mode_for(folder)}")
    from .execution import sandbox

    console.print("[bold]sandbox for trial code[/bold]")
    for mode, works, why in sandbox.report():
        console.print(f"  {mode}: {'works' if works else 'not available'}: {why}", highlight=False,
                      markup=False)
    best, why = sandbox.resolve("auto", os.environ.get("AUTOSCI_SANDBOX_IMAGE", ""))
    unprotected = " (trial code would run unprotected)" if best == "none" else ""
    console.print(f"  executor.sandbox=auto uses: {best}{unprotected}", highlight=False, markup=False)
    console.print("[bold]API keys[/bold]")
    for var in API_KEY_VARIABLES:
        # Never print the key, nor any part of it.
        advice = (" (prefer llm.api_key_file, mode 0600: a process's environment stays readable in "
                  "/proc/<pid>/environ for its whole life)") if os.environ.get(var) else ""
        console.print(f"  {var}: {'set' if os.environ.get(var) else 'not set'}{advice}", highlight=False)
    if args.config:
        ok = _doctor_model(args.config, args.set or []) and ok
    if args.probe:
        ok = _doctor_probe(args.config, args.set or [], folder) and ok
    return 0 if ok else 1


def _doctor_probe(config_file: Optional[str], overrides: list[str], folder: Path) -> bool:
    """One tiny job where the campaign's trials would run (execution/probe.py)."""
    import tempfile

    from .execution.probe import run_probe

    console.print("[bold]probe of the trials' hardware[/bold]")
    try:
        config = load_config(config_file, overrides)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="probe-", dir=folder) as scratch:
            ok, lines = run_probe(config, load_task(config.task.path), Path(scratch).absolute())
    except (ConfigError, TaskError) as exc:
        ok, lines = False, [str(exc)]
    for line in lines:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    return ok


def _doctor_model(config_file: str, overrides: list[str]) -> bool:
    """Whether the campaign's model endpoint answers from this node (a cheap model-list request)."""
    from .llm.keys import resolve_api_key
    from .llm.probe import probe

    console.print("[bold]model endpoint[/bold]")
    try:
        config = load_config(config_file, overrides)
        if config.llm.backend in ("offline", "random"):
            console.print(f"  llm.backend={config.llm.backend}: no model to reach")
            return True
        result = probe(config.llm, resolve_api_key(config.llm))
    except ConfigError as exc:
        console.print(f"  {exc}", highlight=False, markup=False, soft_wrap=True)
        return False
    console.print(f"  {'ok' if result.ok else 'FAILED'}: {result.line}", highlight=False, markup=False,
                  soft_wrap=True)
    return result.ok


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the same task under several coordination modes and seeds, one matched budget, one report."""
    from .compare import run_comparison
    from .state.lease import LeaseHeld

    files = [args.config] + [a for a in args.overrides if "=" not in a and a.endswith((".yaml", ".yml"))]
    overrides = [a for a in args.overrides if a not in files]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        err.print(f"autosci compare: --out {out} exists and is not a folder; name a folder for the campaigns",
                  highlight=False, markup=False)
        return 2
    loaded = _load(args)  # the same checks as `autosci run`, before any campaign folder exists
    if loaded is None or _launch_problem(*loaded):
        return 2
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

    folders = [Path(f) for f in args.folders] or [_campaign_folder(None)]
    out = Path(args.out) if args.out else CampaignLayout(folders[0]).report_html
    written: list[Path] = []
    created = [p for p in ([Path(args.export)] if args.export else []) if not p.exists()]
    # The report and the log hold the held-out metrics: owner-only, like the campaign folder, unless
    # --shared (new files and folders are created so; existing ones are set so after writing).
    old_umask = os.umask(0o022 if args.shared else 0o077)
    try:
        path = write_report(folders, out, target=args.target)
        written.append(path)
        if args.export:
            for folder in folders:
                dest = Path(args.export) / folder.name if len(folders) > 1 else Path(args.export)
                created += [] if dest.exists() or dest in created else [dest]
                for line in export_log(load_campaign(folder), dest):
                    console.print(line, highlight=False, soft_wrap=True)
                written += [f for f in dest.iterdir() if f.is_file() and not f.is_symlink()]
    except ReportError as exc:
        err.print(f"autosci: {exc}", highlight=False, soft_wrap=True)
        return 2
    finally:
        os.umask(old_umask)
    if not args.shared:
        _make_private(written + created)
    console.print(str(path), highlight=False, soft_wrap=True)
    return 0


def _make_private(paths: Sequence[Path]) -> None:
    """Owner-only modes for what a command wrote: 0600 for its files, 0700 for the folders it created
    (a folder that was there before keeps its mode)."""
    for path in paths:
        if path.exists() and not path.is_symlink():
            os.chmod(path, 0o700 if path.is_dir() else 0o600)


#: `autosci --help`: every command, with its form and one line (sub-commands written out in full).
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("run", "run CONFIG [MORE.yaml] [KEY=VALUE]", "run a campaign to its budget on this machine, with a live view"),
    ("coordinate", "coordinate CONFIG [...]", "the long-lived coordinator of a campaign (what sbatch runs; resumes)"),
    ("status", "status [FOLDER]", "the campaign's picture: champion, teams, budget, spend (read-only)"),
    ("log", "log [FOLDER] [--team T --status S]", "the experiment log: one line per trial"),
    ("show", "show [FOLDER] REF", "one trial (12), proposal (p3), team (team-1) or champion (c2, champion)"),
    ("rerun", "rerun [FOLDER] TRIAL", "re-run one trial from the log in a fresh folder"),
    ("report", "report [FOLDER ...]", "one self-contained HTML report of one or several campaigns"),
    ("compare", "compare CONFIG --out DIR", "the same task under several modes and seeds, matched budget"),
    ("task check", "task check TASK", "validate a task folder and run its champion once"),
    ("doctor", "doctor [--config CONFIG]", "check packages, SLURM, the filesystem, the sandbox and API keys"),
)

FOLDER_RULE = ("FOLDER: a campaign folder, given first or as -C FOLDER; default: the newest under runs/ "
               "($AUTOSCI_CAMPAIGN when set)")


def _help_epilog() -> str:
    width = max(len(form) for _, form, _ in COMMANDS)
    lines = [f"  {form:<{width}}  {line}" for _, form, line in COMMANDS]
    return ("commands:\n" + "\n".join(lines) + "\n\n" + FOLDER_RULE
            + "\n'autosci COMMAND --help' for a command's options.")


def _reads_a_campaign(p: argparse.ArgumentParser, command: str) -> None:
    """The one way every campaign-reading command takes its folder(s)."""
    wants = READS_A_CAMPAIGN[command]
    p.add_argument("words", nargs="*", metavar="FOLDER" if not wants else f"[FOLDER] {wants}",
                   help="campaign folder" + (f", then {wants}" if wants else "") + " (folder default: the newest "
                        "under runs/)")
    p.add_argument("-C", "--campaign", action="append", default=[], metavar="FOLDER",
                   help="the campaign folder, as an option" + (" (repeatable)" if command == "report" else ""))
    p.set_defaults(strays="words", reads=command)


def add_report_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="one self-contained HTML report of one or several campaigns (read-only)",
                       usage="autosci report [FOLDER ...] [-C FOLDER] [--out FILE] [--target T] [--export DIR] "
                             "[--shared]")
    _reads_a_campaign(p, "report")
    p.add_argument("--out", help="the HTML file (default: <first campaign>/report.html)")
    p.add_argument("--target", type=_finite, help="metric target for trials-to-target (default: half-way from the "
                                                 "baseline to the best final champion)")
    p.add_argument("--export", metavar="DIR", help="also write the log as CSV (and Parquet with pyarrow) here")
    p.add_argument("--shared", action="store_true",
                   help="let group and others read the files written (default: owner only, 0600 files and "
                        "0700 folders, like the campaign folder: they hold the held-out metrics)")
    p.set_defaults(func=cmd_report)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autosci", usage="autosci COMMAND ...", epilog=_help_epilog(),
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Research campaigns of agents improving a program against a metric, "
                                 "on this machine or a SLURM cluster.")
    parser.add_argument("--version", action="version", version=f"autosci {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS,
                                prog="autosci")
    p = sub.add_parser("run", help="run a campaign to its budget, with a live view")
    p.add_argument("config", help="campaign YAML (configs/campaign/*.yaml)")
    p.add_argument("overrides", nargs="*",
                   help="more YAML files merged in order (e.g. configs/cluster/h100_example.yaml), "
                        "then key=value overrides, e.g. budget.trials=60")
    p.add_argument("--quiet", action="store_true", help="progress lines instead of the live view")
    p.add_argument("--lease-ttl", type=_seconds, default=120.0, help="seconds a silent coordinator keeps its lease")
    p.set_defaults(func=cmd_run, strays="overrides")
    p = sub.add_parser("coordinate", help="the long-lived coordinator of a campaign (resumes its folder)")
    p.add_argument("config", help="campaign YAML")
    p.add_argument("overrides", nargs="*", help="more YAML files, then key=value overrides")
    p.add_argument("--lease-ttl", type=_seconds, default=120.0, help="seconds a silent coordinator keeps its lease")
    p.add_argument("--no-requeue", action="store_true", help="on a stop signal, do not requeue the Slurm job")
    p.add_argument("--inline-agents", action="store_true",
                   help="run the agents inside the coordinator process instead of one process each")
    p.set_defaults(func=cmd_coordinate, strays="overrides")
    p = sub.add_parser("status", help="the campaign's picture, read-only, while it runs",
                       usage="autosci status [FOLDER] [-C FOLDER]")
    _reads_a_campaign(p, "status")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("log", help="list trials", usage="autosci log [FOLDER] [-C FOLDER] [--team TEAM] "
                       "[--status STATUS] [--proposal N] [--limit N]")
    _reads_a_campaign(p, "log")
    p.add_argument("--team")
    p.add_argument("--status", choices=["created", "submitting", "submitted", "succeeded", "failed"])
    p.add_argument("--proposal", type=_count)
    p.add_argument("--limit", type=_count, default=200)
    p.set_defaults(func=cmd_log)
    p = sub.add_parser("show", help="one trial (12, with its diff), proposal (p3), team (team-1) or champion "
                                    "(c2, or 'champion' for the current one: its model card and diff)",
                       usage="autosci show [FOLDER] REF [-C FOLDER] [--transcript]")
    _reads_a_campaign(p, "show")
    p.add_argument("--transcript", action="store_true",
                   help="print the model conversations behind the proposal (or the trial's proposal)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("rerun", help="re-run one trial from the log in a fresh folder",
                       usage="autosci rerun [FOLDER] TRIAL [-C FOLDER] [--seed N] [--executor {local,slurm}] "
                             "[--timeout S]",
                       description="Re-run one trial from the log in a fresh folder under "
                                   "<campaign>/reruns (works from any directory). Exit status: 0 the "
                                   "rerun ran and printed its metric, 'identical' or 'differs' from the "
                                   "logged one; 1 it produced no metric (the reason is printed) or no "
                                   "campaign database was found; 2 no such trial.")
    _reads_a_campaign(p, "rerun")
    p.add_argument("--seed", type=_seed, help="another seed (default: the logged one)")
    p.add_argument("--executor", choices=["local", "slurm"], help="default: the campaign's")
    p.add_argument("--timeout", type=_seconds, default=3600, help="seconds to wait for the result")
    p.set_defaults(func=cmd_rerun)
    p = sub.add_parser("compare", help="the same task under several modes and seeds, matched budget, one report")
    p.add_argument("config", help="campaign YAML: its budget is every arm's budget")
    p.add_argument("overrides", nargs="*", help="more YAML files, then key=value overrides (applied to every arm)")
    p.add_argument("--arms", default="single,central,decentralized",
                   help="comma-separated: decentralized, central, single, random (default: %(default)s)")
    p.add_argument("--seeds", type=_count, default=3, help="campaign seeds per arm (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for the campaigns, their logs and report.html")
    p.add_argument("--parallel", type=_count, default=1, help="campaigns run at once (default: %(default)s)")
    p.add_argument("--target", type=_finite, help="metric target for trials-to-target (default: half-way "
                                                  "from the baseline to the best champion found)")
    p.set_defaults(func=cmd_compare, strays="overrides")
    p = sub.add_parser("doctor", help="check packages, SLURM, the filesystem and API keys")
    p.add_argument("folder", nargs="?", default="runs", help="where campaign folders will live")
    p.add_argument("--config", help="a campaign config: also check that its model endpoint answers from here")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="an override of that config (repeatable)")
    p.add_argument("--probe", action="store_true",
                   help="submit one tiny job where the config's trials run: the GPUs it sees, torch and CUDA "
                        "versions, whether the sandbox works there")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("task", help="task authoring: `autosci task check tasks/NAME`")
    task_sub = p.add_subparsers(dest="task_command", required=True, metavar="check", prog="autosci task")
    p = task_sub.add_parser("check", help="validate a task folder and run its champion once (seed 0)")
    p.add_argument("task", help="the task folder (with task.yaml)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--folder", help="prepare and run in this campaign folder (kept) instead of a temporary one")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    p.add_argument("--timeout", type=_seconds, help="seconds for the champion run (default: the task's time_limit_s)")
    p.set_defaults(func=cmd_task_check)
    add_report_parser(sub)
    return parser


def _version() -> str:
    try:
        return metadata.version("autosci-hpc")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, in the one grammar: positional words may stand before or after options
    (argparse alone leaves those after an option unrecognized), and a campaign-reading command gets
    `args.folder` (None: the newest) plus, for show and rerun, `args.ref` / `args.trial`."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [word for word in extra if word.startswith("-") and len(word) > 1]
    strays = getattr(args, "strays", None)
    if unknown or (extra and strays is None):
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        getattr(args, strays).extend(extra)
    command = getattr(args, "reads", None)
    if command is None:
        return args
    try:
        folders, last = _place_folder(command, list(args.words), list(args.campaign))
        args.folders, args.folder = folders, (folders[0] if folders else None)
        if command == "show":
            args.ref = last
        elif command == "rerun":
            args.trial = _trial_number(str(last), args.folder)
    except Misuse as exc:
        parser.exit(2, f"autosci {command}: {exc}\n")
    return args


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The sub-parser that parsed `args` (its usage is the form the one-line error shows)."""
    for action in parser._subparsers._group_actions if parser._subparsers else []:  # noqa: SLF001
        chosen = getattr(action, "choices", {}).get(args.command)
        if chosen is not None and args.command == "task":
            return chosen._subparsers._group_actions[0].choices[args.task_command]  # noqa: SLF001
        if chosen is not None:
            return chosen
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .state.migrations import SchemaError
    from .state.store import StoreError

    args = parse(argv)
    try:
        return int(args.func(args))
    except (StoreError, SchemaError) as exc:  # a campaign database that cannot be read: nothing was changed
        err.print(f"autosci: {exc}", highlight=False, markup=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
