"""`autosci task check`: does a task folder work, end to end, before a campaign spends on it?

It loads task.yaml, checks the program contract that can be checked without running anything
(placeholders in the command, axes that name config keys), prepares the task's data into a
campaign folder of its own, builds the champion's snapshot and runs it once through the real trial
runner, then checks what the program wrote (both metrics, finite) and what it printed (never the
test metric). Every failure says which step broke and why, with the program's log tail.

Exit codes (`exit_code`): 0 the task works; 1 it is well-formed but its data preparation or its
champion run fails; 2 the task definition itself is invalid.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from .task import TaskError, TaskSpec, load_task

REQUIRED_PLACEHOLDERS = ("{overrides}", "{seed}", "{artifacts}")
#: {metrics} in the training command is the program's own, "reported" metrics file (never trusted).
KNOWN_PLACEHOLDERS = {"python", "overrides", "seed", "metrics", "data", "artifacts"}
#: The evaluator's command: what it may be given (the sealed data only here).
EVALUATE_REQUIRED = ("{metrics}", "{artifacts}")
EVALUATE_PLACEHOLDERS = {"python", "evaluator", "artifacts", "data", "sealed", "split", "seed", "metrics",
                         "program"}


@dataclass
class Step:
    name: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0


@dataclass
class CheckReport:
    path: str
    task: Optional[TaskSpec] = None
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metric: Optional[float] = None
    test_metric: Optional[float] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    trial_seconds: Optional[float] = None
    log_tail: str = ""
    folder: Optional[Path] = None
    #: 0 works, 1 runs but fails (data or program), 2 invalid definition.
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def fail(self, name: str, detail: str, code: int, seconds: float = 0.0) -> "CheckReport":
        self.steps.append(Step(name, False, detail, seconds))
        self.exit_code = code
        return self


def static_problems(task: TaskSpec) -> tuple[list[str], list[str]]:
    """(errors, warnings) found in the task definition without running anything."""
    errors: list[str] = []
    warnings: list[str] = []
    for placeholder in REQUIRED_PLACEHOLDERS:
        if placeholder not in task.command:
            errors.append(f"command lacks {placeholder}: the runner passes the trial's "
                          f"{placeholder.strip('{}')} through it")
    unknown = set(re.findall(r"{(\w+)}", task.command)) - KNOWN_PLACEHOLDERS
    if unknown:
        errors.append(f"command uses unknown placeholder(s) {', '.join(sorted(unknown))} "
                      f"(known: {', '.join(sorted(KNOWN_PLACEHOLDERS))})")
    if "{python}" not in task.command:
        warnings.append("command does not start the program with {python}: trials may not run in the "
                        "campaign's environment")
    if task.prepare and "{data}" not in task.prepare:
        errors.append("prepare command lacks {data}: it must write into the campaign's data folder")
    if task.prepare and "{data}" not in task.command:
        warnings.append("the task prepares data but its command does not pass {data}; the program must "
                        "read $AUTOSCI_DATA")
    if task.metric.name == task.test_metric:
        errors.append("metric and test_metric are the same key: the test metric must be a separate, "
                      "private number")
    if "config.yaml" in task.editable and not (task.program_dir / "config.yaml").is_file():
        errors.append("config.yaml is editable but missing")
    config = task.base_config()
    for axis in task.axes:
        if config and axis.key not in config:
            errors.append(f"axis '{axis.key}' is not a key of config.yaml (keys: {', '.join(sorted(config))})")
    sealed_errors, sealed_warnings = sealed_contract_problems(task)
    errors += sealed_errors
    warnings += sealed_warnings
    if not task.axes:
        warnings.append("no axes: the offline policy will have nothing to vary")
    elif len(task.groups()) < 2:
        warnings.append("all axes are in one group: teams will all share one hypothesis")
    return errors, warnings


def sealed_contract_problems(task: TaskSpec) -> tuple[list[str], list[str]]:
    """(errors, warnings) about task contract 2's sealed evaluator, found without running anything."""
    errors: list[str] = []
    warnings: list[str] = []
    for placeholder in EVALUATE_REQUIRED:
        if placeholder not in task.evaluate:
            errors.append(f"evaluate lacks {placeholder}: the evaluator reads the artifacts and writes the "
                          "metrics file")
    unknown = set(re.findall(r"{(\w+)}", task.evaluate)) - EVALUATE_PLACEHOLDERS
    if unknown:
        errors.append(f"evaluate uses unknown placeholder(s) {', '.join(sorted(unknown))} "
                      f"(known: {', '.join(sorted(EVALUATE_PLACEHOLDERS))})")
    if task.prepare and "{sealed}" not in task.evaluate:
        warnings.append("the task prepares data but its evaluator is not given {sealed}: where are the "
                        "labels?")
    if task.splits > 1 and not task.prepare:
        errors.append(f"splits: {task.splits} needs a prepare command that writes them")
    for name in task.editable:
        if name.startswith(task.evaluator.rstrip("/") + "/"):
            errors.append(f"editable file '{name}' is in the evaluator's folder")
    return errors, warnings


def _text_lines(folder: Path, min_chars: int = 20, skip: tuple[str, ...] = ()) -> set[str]:
    lines: set[str] = set()
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.relative_to(folder).parts[0] in skip:
            continue
        if path.is_file() and not path.is_symlink() and path.stat().st_size <= 64 << 20:
            body = path.read_text(errors="replace").splitlines()[1:]  # not a header shared by every file
            lines.update(line.strip() for line in body if len(line.strip()) >= min_chars)
    return lines


def heldout_leaks(request: Any) -> tuple[list[str], list[str]]:
    """(errors, warnings): did the training step of `request` receive held-out data?

    Checks what the harness hands the training step: its command line and environment never name
    the sealed folder; no file of the visible part is byte-identical to a sealed file; and the
    sealed files' lines (this split's validation rows, held-out text) do not reappear in the visible part
    (an error when most do, a warning when a few do, e.g. repeated lines of a text).
    """
    from .execution.trial import sealed_exposure
    from .task import file_hashes

    errors: list[str] = list(sealed_exposure(request))
    warnings: list[str] = []
    if not request.sealed_dir:
        return errors, warnings
    visible, sealed = Path(request.data_dir), Path(request.sealed_dir)
    # Other splits' validation folds are this split's training rows: only this split's are held out.
    others = tuple(p.name for p in sealed.glob("split-*") if p.name != f"split-{request.split}")
    sealed_hashes = {h: rel for rel, h in file_hashes(sealed).items() if rel.split("/")[0] not in others}
    for rel, digest in file_hashes(visible).items():
        if digest in sealed_hashes:
            errors.append(f"visible file {rel} is identical to sealed file {sealed_hashes[digest]}")
    seen = _text_lines(visible)
    held = _text_lines(sealed, skip=others)
    if held and seen:
        shared = len(held & seen)
        if shared > len(held) // 2:
            errors.append(f"{shared} of {len(held)} lines of the sealed data also appear in the training "
                          "step's data")
        elif shared:
            warnings.append(f"{shared} of {len(held)} lines of the sealed data also appear in the training "
                            "step's data (repeated lines, or a leak)")
    return errors, warnings


def _printed_test_metric(log: str, value: float) -> Optional[str]:
    """How the log shows the test metric, if it does: its repr, or 4+ decimals of it."""
    for text in (repr(value), f"{value:.6f}", f"{value:.5f}", f"{value:.4f}"):
        if re.search(r"(?<![\d.])" + re.escape(text) + r"(?!\d)", log):
            return text
    return None


def check_task(path: Union[str, Path], *, seed: int = 0, folder: Optional[Path] = None,
               keep: bool = False, time_limit_s: Optional[float] = None) -> CheckReport:
    """Run every check on the task at `path`; the report says what passed and what did not."""
    report = CheckReport(path=str(path))
    started = time.monotonic()
    try:
        task = load_task(path)
    except TaskError as exc:
        return report.fail("task.yaml", str(exc), 2)
    report.task = task
    errors, report.warnings = static_problems(task)
    if errors:
        return report.fail("contract", "; ".join(errors), 2, time.monotonic() - started)
    report.steps.append(Step("task.yaml", True, f"{task.name} v{task.version}: metric {task.metric.name} "
                                                f"({task.metric.direction}), {len(task.axes)} axes in "
                                                f"{len(task.groups())} groups",
                             time.monotonic() - started))

    temporary = folder is None
    campaign = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=f"autosci-check-{task.name}-"))
    campaign.mkdir(parents=True, exist_ok=True)
    report.folder = campaign
    try:
        _run_checks(report, task, campaign, seed, time_limit_s)
    finally:
        if temporary and not keep:
            shutil.rmtree(campaign, ignore_errors=True)
            report.folder = None
    return report


def _run_checks(report: CheckReport, task: TaskSpec, campaign: Path, seed: int,
                time_limit_s: Optional[float]) -> None:
    from .data import DataError, data_dir, prepare_data
    from .execution.results import read_result
    from .execution.trial import TrialFailed, run_trial, task_request
    from .task import build_snapshot

    t0 = time.monotonic()
    if task.prepare:
        try:
            manifest = prepare_data(task, campaign)
        except DataError as exc:
            report.fail("data", str(exc), 1, time.monotonic() - t0)
            return
        provenance = manifest.get("provenance", {})
        missing = [k for k in ("source", "license", "citation") if not provenance.get(k)]
        if missing:
            report.warnings.append(f"provenance.json lacks {', '.join(missing)}")
        report.steps.append(Step("data", True, f"{len(manifest.get('sha256', {}))} files in {data_dir(campaign)}"
                                 + (f"; source: {provenance['source']}" if provenance.get("source") else ""),
                                 time.monotonic() - t0))

    t0 = time.monotonic()
    try:
        snapshot = build_snapshot(task, campaign)
    except (TaskError, OSError) as exc:
        report.fail("snapshot", str(exc), 2, time.monotonic() - t0)
        return
    trial_folder = campaign / "trials" / "check-0"
    request = task_request(task, campaign, trial_id=0, folder=trial_folder,
                           snapshot_dir=campaign / "snapshots" / snapshot, overrides={}, seed=seed,
                           time_limit_s=time_limit_s or task.time_limit_s)
    leak_errors, leak_warnings = heldout_leaks(request)
    report.warnings += leak_warnings
    if leak_errors:
        report.fail("held-out data", "; ".join(leak_errors), 2)
        return
    given = f"{Path(request.data_dir).name}/ of the visible data" if request.data_dir else "its program"
    report.steps.append(Step("held-out data", True, f"the training step is given only {given}; validation "
                             "labels and held-out data go to the evaluator"))
    t0 = time.monotonic()
    try:
        run_trial(request)
    except TrialFailed:
        pass  # the result file says why
    except Exception as exc:  # noqa: BLE001 - the runner itself broke: report it, do not crash
        report.fail("champion run", f"the trial runner failed: {exc!r}", 1, time.monotonic() - t0)
        return
    seconds = time.monotonic() - t0
    report.trial_seconds = seconds
    result = read_result(trial_folder, 0)
    log = (trial_folder / "trial.log").read_text(errors="replace") if (trial_folder / "trial.log").is_file() else ""
    report.log_tail = result.log_tail if result else "\n".join(log.splitlines()[-30:])
    if result is None:
        report.fail("champion run", "the trial wrote no result file", 1, seconds)
        return
    if result.status != "succeeded":
        report.fail("champion run", f"{result.failure_class}: {result.failure_reason}", 1, seconds)
        return
    report.metric, report.test_metric, report.metrics = result.metric, result.test_metric, result.metrics
    report.steps.append(Step("champion run", True, f"seed {seed}: {task.metric.name} = {result.metric!r}",
                             seconds))
    assert result.test_metric is not None
    shown = _printed_test_metric(log, result.test_metric)
    if shown is not None:
        report.fail("test metric private", f"the program printed the test metric ({task.test_metric} = {shown}); "
                                           "it must only write it to the metrics file", 1)
        return
    report.steps.append(Step("test metric private", True, f"{task.test_metric} is in the metrics file and "
                                                          "not in the program's output"))


def render(report: CheckReport) -> str:
    """The report as plain text lines, for the CLI."""
    lines = [f"task check: {report.path}"]
    for step in report.steps:
        mark = "ok  " if step.ok else "FAIL"
        timing = f" ({step.seconds:.1f} s)" if step.seconds >= 0.05 else ""
        detail = step.detail.replace("\n", "\n       ")
        lines.append(f"  {mark} {step.name}{timing}: {detail}")
    for warning in report.warnings:
        lines.append(f"  warn {warning}")
    if not report.ok and report.log_tail:
        lines.append("  program log (tail):")
        lines.extend(f"    | {line}" for line in report.log_tail.splitlines()[-20:])
    if report.ok and report.task is not None:
        lines.append(f"  metric {report.task.metric.name} = {report.metric:.6g} "
                     f"({report.task.metric.direction}); private {report.task.test_metric} = "
                     f"{report.test_metric:.6g}; champion trial {report.trial_seconds:.1f} s")
    if report.folder is not None:
        lines.append(f"  kept: {report.folder}")
    lines.append("task check passed" if report.ok else
                 f"task check FAILED (exit {report.exit_code}: "
                 f"{'invalid task definition' if report.exit_code == 2 else 'data or program failure'})")
    return "\n".join(lines)
