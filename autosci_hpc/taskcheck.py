"""`autosci task check`: does a task folder work, end to end, before a campaign spends on it?

It loads task.yaml, checks the program contract that can be checked without running anything
(placeholders in the command, axes that name config keys), prepares the task's data into a
campaign folder of its own, builds the champion's snapshot and runs it once through the real trial
runner, then checks what the program wrote (both metrics, finite) and what it printed (never the
test metric, in any formatting). Then the strictness checks: the champion on a second seed gives a
different metric (where the task's metric depends on the seed, the default), and an override key the
program's config does not have is refused with exit status 2. Every failure says which step broke and
why, with the program's log tail.

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
from typing import Any, Optional, Sequence, Union

from .layout import CampaignLayout
from .task import TaskError, TaskSpec, load_task, unknown_keys

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
    smoke_keys = unknown_keys(config, task.smoke.overrides) if task.smoke else []
    if smoke_keys:
        errors.append(f"smoke.overrides: {', '.join(smoke_keys)} not key(s) of config.yaml: every smoke run "
                      "would fail on them")
    budgets = time_budgets(task, config)
    if budgets and not task.timed:
        warnings.append(f"the metric looks time-budgeted ({', '.join(budgets)}) but task.yaml declares "
                        "`noise: seeded`: say `noise: timed` so that the champion is re-run next to each "
                        "challenger instead of trusting runs made under other load")
    sealed_errors, sealed_warnings = sealed_contract_problems(task)
    errors += sealed_errors
    warnings += sealed_warnings
    if not task.axes:
        warnings.append("no axes: the offline policy will have nothing to vary")
    elif len(task.groups()) < 2:
        warnings.append("all axes are in one group: teams will all share one hypothesis")
    return errors, warnings


def time_budgets(task: TaskSpec, config: dict[str, Any]) -> list[str]:
    """Where a task cuts its training off by wall time (a config key `*time_budget_s` above 0, or the
    evaluator told `--time-budget`): such a metric depends on the machine's load, not only on the seed."""
    found = [f"{key}={value}" for key, value in sorted(config.items())
             if key.rsplit(".", 1)[-1] == "time_budget_s" and isinstance(value, (int, float)) and value > 0]
    match = re.search(r"--time-budget[= ]+(\S+)", task.evaluate)
    if match and match.group(1) not in ("0", "0.0"):
        found.append(f"evaluate --time-budget {match.group(1)}")
    return found


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
                                                f"{len(task.groups())} groups, noise {task.noise}",
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
    from .data import DataError, prepare_data
    from .execution.trial import task_request
    from .task import build_snapshot

    layout = CampaignLayout(campaign)
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
        report.steps.append(Step("data", True, f"{len(manifest.get('sha256', {}))} files in {layout.data}"
                                 + (f"; source: {provenance['source']}" if provenance.get("source") else ""),
                                 time.monotonic() - t0))

    t0 = time.monotonic()
    try:
        snapshot = build_snapshot(task, campaign)
    except (TaskError, OSError) as exc:
        report.fail("snapshot", str(exc), 2, time.monotonic() - t0)
        return
    request = task_request(task, campaign, trial_id=0, folder=layout.trials / "check-0",
                           snapshot_dir=layout.snapshot(snapshot), overrides={}, seed=seed,
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
        result, log = _run_once(request)
    except Exception as exc:  # noqa: BLE001 - the runner itself broke: report it, do not crash
        report.fail("champion run", f"the trial runner failed: {exc!r}", 1, time.monotonic() - t0)
        return
    seconds = time.monotonic() - t0
    report.trial_seconds = seconds
    report.log_tail = result.log_tail if result else "\n".join(log.splitlines()[-30:])
    if result is None:
        report.fail("champion run", "the trial wrote no result file", 1, seconds)
        return
    if not _succeeded(result):
        report.fail("champion run", f"{result.failure_class}: {result.failure_reason}", 1, seconds)
        return
    report.metric, report.test_metric, report.metrics = result.metric, result.test_metric, result.metrics
    report.steps.append(Step("champion run", True, f"seed {seed}: {task.metric.name} = {result.metric!r}",
                             seconds))
    assert result.test_metric is not None
    others = [v for k, v in result.metrics.items() if k != task.test_metric and isinstance(v, (int, float))]
    shown = printed_held_out(log, result.test_metric, others)
    if shown is not None:
        report.fail("test metric private", f"the program printed the test metric ({task.test_metric} = {shown}); "
                                           "it must only write it to the metrics file", 1)
        return
    report.steps.append(Step("test metric private", True, f"{task.test_metric} is in the metrics file and "
                                                          "not in the program's output"))
    if check_second_seed(report, task, request):
        check_unknown_override(report, task, request)


# ---- strictness: a second seed, an unknown override, the held-out value in any formatting ------------

#: An override key no program config has: the program must refuse it (exit status 2).
UNKNOWN_KEY = "autosci_check.no_such_key"


def _run_once(request: Any) -> tuple[Any, str]:
    """Run one trial request through the real runner; (its result or None, its log)."""
    from .execution.results import read_result
    from .execution.trial import TrialFailed, run_trial

    try:
        run_trial(request)
    except TrialFailed:
        pass  # the result file says why
    folder = Path(request.folder)
    log = (folder / "trial.log").read_text(errors="replace") if (folder / "trial.log").is_file() else ""
    return read_result(folder, request.trial_id), log


def _succeeded(result: Any) -> bool:
    """Whether a trial's result file (None: it wrote none) says it succeeded. The enum is imported
    here so that loading this module does not load the database layer."""
    from .state.lifecycle import TrialStatus

    return result is not None and result.status == TrialStatus.SUCCEEDED


def seed_dependent(task: TaskSpec) -> bool:
    """Whether the task says its metric depends on the seed (task.yaml `seed_dependent`, default true:
    a program that ignores --seed then gives every replicate the same number, and promotion's
    seed-to-seed spread is a lie)."""
    return task.seed_dependent


def check_second_seed(report: CheckReport, task: TaskSpec, first: Any) -> bool:
    """Run the champion on a second seed; where the metric depends on the seed it must differ."""
    from .execution.trial import task_request

    seed = first.seed + 1
    # A request of its own: under task contract 2 the seed also picks the data split.
    campaign = Path(first.folder).parent.parent
    request = task_request(task, campaign, trial_id=1, folder=Path(first.folder).parent / f"check-seed{seed}",
                           snapshot_dir=Path(first.snapshot_dir), overrides=dict(first.overrides), seed=seed,
                           time_limit_s=first.time_limit_s, sandbox=first.sandbox)
    t0 = time.monotonic()
    try:
        result, log = _run_once(request)
    except Exception as exc:  # noqa: BLE001
        report.fail("second seed", f"the trial runner failed: {exc!r}", 1, time.monotonic() - t0)
        return False
    seconds = time.monotonic() - t0
    if not _succeeded(result):
        report.log_tail = result.log_tail if result else log[-3000:]
        why = f"{result.failure_class}: {result.failure_reason}" if result else "no result file"
        report.fail("second seed", f"seed {seed} fails where seed {first.seed} ran: {why}", 1, seconds)
        return False
    if seed_dependent(task) and result.metric == report.metric:
        report.fail("second seed", f"seeds {first.seed} and {seed} give the same {task.metric.name} "
                                   f"({result.metric!r}): the program ignores --seed, but the task's metric "
                                   "depends on the seed (use the seed for every random choice, or set "
                                   "`seed_dependent: false` in task.yaml if the metric truly does not)",
                    1, seconds)
        return False
    report.steps.append(Step("second seed", True, f"seed {seed}: {task.metric.name} = {result.metric!r}",
                             seconds))
    return True


def check_unknown_override(report: CheckReport, task: TaskSpec, first: Any) -> bool:
    """An override key the config does not have must be refused with exit status 2, never ignored: a
    silently ignored override makes a proposal's change a no-op that still costs its trials."""
    request = first.model_copy(update={"trial_id": 2, "overrides": {UNKNOWN_KEY: 1},
                                       "folder": str(Path(first.folder).parent / "check-unknown-override")})
    t0 = time.monotonic()
    try:
        result, log = _run_once(request)
    except Exception as exc:  # noqa: BLE001
        report.fail("unknown override", f"the trial runner failed: {exc!r}", 1, time.monotonic() - t0)
        return False
    seconds = time.monotonic() - t0
    code = result.returncode if result is not None else None
    if code == 2:
        report.steps.append(Step("unknown override", True, f"{UNKNOWN_KEY}=1 is refused (exit 2)", seconds))
        return True
    if _succeeded(result):
        what = "ran and reported a metric: it silently ignores override keys it does not know"
    else:
        what = f"failed with exit status {code} ({result.failure_class if result else 'no result file'})"
    report.fail("unknown override", f"an override of a key config.yaml does not have ({UNKNOWN_KEY}=1) "
                                    f"{what}; it must exit with status 2 naming the key", 1, seconds)
    return False


_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?%?")
#: Significant digits a printed number needs before it counts as the held-out value (fewer would
#: match too much by chance).
MIN_DIGITS = 3


def _reading(text: str) -> Optional[tuple[float, float]]:
    """(value, half a unit of its last printed digit) of a number as printed, percent included; None
    for an integer without a %, and a tolerance of 0 (the exact value only) for a number with fewer
    than `MIN_DIGITS` significant digits."""
    percent = text.endswith("%")
    body = text.rstrip("%").lstrip("+-")
    mantissa, _, exponent = body.lower().partition("e")
    if not percent and "." not in mantissa and not exponent:
        return None
    try:
        value = float(text.rstrip("%")) * (0.01 if percent else 1.0)
    except ValueError:
        return None
    digits = mantissa.replace(".", "").lstrip("0")
    if len(digits) < MIN_DIGITS:
        return value, 0.0  # only the exact value counts (its repr, as the check always caught)
    decimals = len(mantissa.partition(".")[2])
    scale = (10.0 ** int(exponent or 0)) * (0.01 if percent else 1.0)
    return value, 0.5 * 10.0 ** -decimals * scale


def printed_held_out(log: str, value: float, others: Sequence[float] = ()) -> Optional[str]:
    """How the log shows the held-out `value`, if it does in any formatting: its repr, rounded to a
    few decimals (`0.713`), scientific (`7.128e-01`) or as a percent (`71.3%`). A number that reads
    as well as one of the `others` (the validation metric) is not counted: it says nothing private."""
    for match in _NUMBER.finditer(log):
        reading = _reading(match.group(0))
        if reading is None:
            continue
        number, half = reading
        tolerance = half * (1 + 1e-9) if half else 0.0
        if abs(number - value) <= tolerance and not any(abs(number - o) <= tolerance for o in others):
            return match.group(0)
    return None


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
