"""An experimenter's scratch workspace: a private copy of the champion snapshot to read, edit
with SEARCH/REPLACE blocks, and smoke-test before any trial is created.

Every path the model names is checked: absolute paths, `..`, and any symbolic link on the way
are refused, the resolved path must stay inside the workspace, and edits are confined to the
task's editable files. The edits that applied are kept in order; replayed on the champion
snapshot (`task.apply_edits`, as the experimenter's launch does) they give the same files.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Optional

import yaml

from ..config import LLMSection
from ..execution import sandbox as sandboxing
from ..execution.executors import ShortJobError, TrialExecutor
from ..execution.local import LocalTrialExecutor
from ..execution.smoke import QUEUE_WAIT_S, smoke_plan
from ..execution.trial import LOG_FILE, TrialRequest, run_smoke
from ..layout import visible_data
from ..scrub import Scrubber
from ..task import Edit, TaskSpec, flatten, unknown_keys_reason

MAX_READ_LINES = 400
MAX_RESULT_CHARS = 12000
#: Environment variables never passed to a smoke run (an edited program must not see API keys).
SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY")


class WorkspaceError(ValueError):
    """A refused path or edit; the message is written for the model to correct itself."""


class Workspace:
    def __init__(self, task: TaskSpec, root: Path, base_overrides: Optional[dict[str, Any]] = None,
                 secrets: Iterable[Optional[str]] = (), *, heldout: Iterable[float] = (),
                 sandbox: Optional[sandboxing.SandboxSettings] = None,
                 executor: Optional[TrialExecutor] = None) -> None:
        self.task = task
        #: What smoke runs go through (`execution.smoke`); None: a local executor, CPU only.
        self.executor = executor
        self.root = root
        self.base_overrides = dict(base_overrides or {})
        self.overrides: dict[str, Any] = {}
        self.edits: list[Edit] = []
        self.secrets = [s for s in secrets if s]
        #: Held-out values known when the workspace was made: the smoke output is scrubbed of them.
        self.heldout = list(heldout)
        #: The campaign's sandbox: the smoke run is a short trial in the same one.
        self.sandbox = sandbox or sandboxing.SandboxSettings()
        self.smoke_passed = False

    @classmethod
    def create(cls, task: TaskSpec, source: Path, parent: Path, name: str = "ws",
               base_overrides: Optional[dict[str, Any]] = None,
               secrets: Iterable[Optional[str]] = (), *, heldout: Iterable[float] = (),
               sandbox: Optional[sandboxing.SandboxSettings] = None,
               executor: Optional[TrialExecutor] = None) -> "Workspace":
        if not source.is_dir():
            raise WorkspaceError(f"the champion snapshot {source} does not exist")
        parent.mkdir(parents=True, exist_ok=True)
        root = parent / f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # symlinks=True: a link in the snapshot is copied as a link (and then refused), never followed.
        shutil.copytree(source, root, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        return cls(task, root, base_overrides, secrets, heldout=heldout, sandbox=sandbox, executor=executor)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- paths ----------------------------------------------------------------------------------

    def resolve(self, rel: str, *, for_edit: bool = False) -> tuple[str, Path]:
        """(normalized relative path, real path) for a path the model named, or WorkspaceError."""
        if not rel or not rel.strip():
            raise WorkspaceError("empty path")
        if rel.startswith(("/", "\\", "~")) or PurePosixPath(rel).is_absolute() or ":" in rel.split("/")[0]:
            raise WorkspaceError(f"'{rel}': absolute paths are refused; name a file relative to the program folder")
        parts = [p for p in PurePosixPath(rel.replace("\\", "/")).parts if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise WorkspaceError(f"'{rel}': '..' is refused; name a file inside the program folder")
        if not parts:
            raise WorkspaceError(f"'{rel}': not a file")
        current = self.root
        for part in parts:
            current = current / part
            if current.is_symlink():
                raise WorkspaceError(f"'{rel}': goes through a symbolic link, which is refused")
        real = current.resolve()
        if not real.is_relative_to(self.root.resolve()):
            raise WorkspaceError(f"'{rel}': leads outside the program folder")
        normalized = "/".join(parts)
        if for_edit and normalized not in self.task.editable:
            raise WorkspaceError(f"'{normalized}' is not editable in task '{self.task.name}'; editable files: "
                                 + ", ".join(self.task.editable))
        return normalized, real

    # ---- reading ---------------------------------------------------------------------------------

    def list_files(self) -> str:
        lines = []
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if "__pycache__" in rel or path.is_dir():
                continue
            if path.is_symlink():
                lines.append(f"{rel}  (symbolic link: refused)")
                continue
            mark = "editable" if rel in self.task.editable else "read-only"
            lines.append(f"{rel}  {path.stat().st_size} bytes, {len(_text(path).splitlines())} lines, {mark}")
        return "\n".join(lines) or "(no files)"

    def read(self, rel: str, start_line: int = 1, max_lines: int = 200) -> str:
        name, path = self.resolve(rel)
        if not path.is_file():
            raise WorkspaceError(f"'{name}': no such file (list_files shows the files)")
        lines = _text(path).splitlines()
        start = max(1, start_line)
        end = min(len(lines), start - 1 + min(max(1, max_lines), MAX_READ_LINES))
        body = "\n".join(f"{i:5d}| {lines[i - 1]}" for i in range(start, end + 1))
        more = (f"\n(lines {start}-{end} of {len(lines)}; read on with start_line={end + 1})"
                if end < len(lines) else "")
        return _bound(f"{name} (lines {start}-{end} of {len(lines)}):\n{body}{more}")

    def file_text(self, rel: str) -> str:
        _, path = self.resolve(rel)
        return _text(path)

    # ---- editing -----------------------------------------------------------------------------------

    def apply(self, edits: list[Edit]) -> tuple[int, str]:
        """Apply SEARCH/REPLACE blocks in order; (number applied, report). A block that does not
        match is reported with the nearest lines of the file, and the others still apply."""
        reports = []
        applied = 0
        for i, edit in enumerate(edits):
            try:
                name, path = self.resolve(edit.path, for_edit=True)
                if not path.is_file():
                    raise WorkspaceError(f"'{name}': no such file")
                if not edit.search:
                    raise WorkspaceError("the SEARCH text is empty; copy the lines to replace from the file")
                text = _text(path)
                count = text.count(edit.search)
                if count == 0:
                    raise WorkspaceError(f"the SEARCH text does not occur in '{name}'. The nearest lines are:\n"
                                         f"{nearest_lines(text, edit.search)}\n"
                                         "Copy the lines exactly (indentation and spacing included) into SEARCH.")
                if count > 1:
                    raise WorkspaceError(f"the SEARCH text occurs {count} times in '{name}' (lines "
                                         f"{', '.join(map(str, occurrences(text, edit.search)[:10]))}); "
                                         "include neighbouring lines so that it occurs exactly once")
                path.write_text(text.replace(edit.search, edit.replace))
            except WorkspaceError as exc:
                reports.append(f"block {i + 1} ({edit.path}): NOT applied: {exc}")
                continue
            self.edits.append(Edit(path=name, search=edit.search, replace=edit.replace))
            self.smoke_passed = False
            applied += 1
            reports.append(f"block {i + 1} ({name}): applied")
        return applied, _bound("\n".join(reports))

    def known_keys(self) -> dict[str, Any]:
        path = self.root / "config.yaml"
        if not path.is_file() or path.is_symlink():
            return {}
        try:
            data = yaml.safe_load(_text(path)) or {}
        except yaml.YAMLError:
            return {}
        return flatten(data) if isinstance(data, dict) else {}

    def set_overrides(self, updates: dict[str, Any]) -> str:
        """Merge config overrides (a null value removes one); unknown keys are refused."""
        unknown = unknown_keys_reason(self.known_keys(), updates)
        if unknown:
            raise WorkspaceError(unknown)
        for key, value in updates.items():
            if value is None:
                self.overrides.pop(key, None)
            else:
                self.overrides[key] = value
        self.smoke_passed = False
        return f"overrides now: {json.dumps(self.overrides, sort_keys=True)}"

    # ---- smoke test ----------------------------------------------------------------------------------

    def smoke(self, llm: LLMSection, data_dir: str = "") -> tuple[bool, str]:
        """A syntax check of every Python file and config.yaml, then (llm.smoke_run) one short local
        run with tiny settings whose training step must write its artifacts. No metric is computed."""
        problems = []
        for path in sorted(self.root.rglob("*.py")):
            if path.is_symlink() or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(self.root).as_posix()
            try:
                compile(_text(path), rel, "exec")
            except SyntaxError as exc:
                problems.append(f"{rel}:{exc.lineno}: {exc.msg}\n    {(exc.text or '').rstrip()}")
        config = self.root / "config.yaml"
        if config.is_file() and not config.is_symlink():
            try:
                yaml.safe_load(_text(config))
            except yaml.YAMLError as exc:
                problems.append(f"config.yaml: not valid YAML: {exc}")
        if problems:
            self.smoke_passed = False
            return False, "smoke test FAILED (syntax):\n" + "\n".join(problems)
        if not llm.smoke_run:
            self._passed()
            return True, "syntax check passed (the smoke run is off: llm.smoke_run=false)"
        ok, report = self._run(llm, data_dir)
        if ok:
            self._passed()
        else:
            self.smoke_passed = False
        return ok, report

    def _passed(self) -> None:
        self.smoke_passed = True

    def _run(self, llm: LLMSection, data_dir: str) -> tuple[bool, str]:
        """A short trial through the executor (`execution.smoke`): the trial runner's own training step,
        in the same folder layout, command, environment and sandbox as a trial's, so a program cannot
        tell the two apart (nothing says "smoke"); only the settings are tiny."""
        plan = smoke_plan(self.task, llm)
        run_dir = self.root.parent / f"{self.root.name}.run"
        shutil.rmtree(run_dir, ignore_errors=True)
        if data_dir:  # the training step's share of the data only (task contract 2): split 0's visible part
            data_dir = str(visible_data(Path(data_dir), 0, self.task.splits))
        request = TrialRequest(trial_id=0, folder=str(run_dir), snapshot_dir=str(self.root),
                               command=self.task.command, seed=0,
                               overrides={**self.base_overrides, **self.overrides, **plan.overrides},
                               time_limit_s=plan.time_limit_s, metric=self.task.metric.name,
                               test_metric=self.task.test_metric, data_dir=data_dir,
                               editable=list(self.task.editable), sandbox=self.sandbox)
        # Without the campaign's executor: this machine's, its job folder removed with the run's
        jobs = self.root.parent / f"{self.root.name}.jobs"
        executor = self.executor or LocalTrialExecutor(jobs, max_concurrent=1, timeout_min=plan.time_limit_s / 60 + 1)
        try:
            with _without_values(self.secrets):  # the job inherits this environment: no secret value in it
                answer = executor.run_short(run_smoke, request, plan.time_limit_s + QUEUE_WAIT_S)
            if not isinstance(answer, dict):
                return False, f"smoke test FAILED: the smoke job answered {type(answer).__name__}"
            log_path = run_dir / LOG_FILE
            if answer.get("timeout"):
                return False, (f"smoke test FAILED: still running after {plan.time_limit_s:g} s and killed "
                               f"(the smoke settings {plan.overrides} should make it take seconds)\n"
                               + self._tail(log_path))
            if not answer.get("ok"):
                return False, f"smoke test FAILED: {answer.get('reason', '')}\n" + self._tail(log_path)
            where = f"on {executor.name}" + (f" GPU(s) {answer['cuda_visible_devices']}"
                                            if answer.get("cuda_visible_devices") else " without a GPU")
            elapsed = float(answer.get("elapsed_s", 0))
            return True, (f"smoke test passed: the training step ran in {elapsed:.1f} s ({where}) with tiny "
                          "settings and wrote its artifacts (the sealed evaluator scores real trials only)")
        except ShortJobError as exc:
            return False, f"smoke test FAILED: {self._scrub(str(exc))}"
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
            if self.executor is None:
                shutil.rmtree(jobs, ignore_errors=True)

    def _scrub(self, text: str) -> str:
        """Drop lines naming the held-out metric; then the scrubber: held-out values in any format, keys
        in any recognisable form."""
        test = self.task.test_metric.lower()
        lines = [line for line in text.splitlines() if test not in line.lower()]
        return Scrubber(self.heldout, self.secrets).scrub("\n".join(lines))

    def _tail(self, log_path: Path, max_lines: int = 40) -> str:
        lines = self._scrub(_text(log_path) if log_path.is_file() else "").splitlines()[-max_lines:]
        return "--- output (last lines) ---\n" + "\n".join(lines)[-4000:]


# ---- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _without_values(secrets: list[str]) -> Iterator[None]:
    """This process's environment without the API key variables and any variable holding a secret, while
    a job that inherits it is submitted."""
    hidden = {k: v for k, v in os.environ.items() if k in SECRET_ENV or any(s in v for s in secrets)}
    for key in hidden:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        os.environ.update(hidden)


def _text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _bound(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters cut)"


def occurrences(text: str, search: str) -> list[int]:
    """1-based line numbers where `search` starts."""
    out, start = [], 0
    while True:
        i = text.find(search, start)
        if i < 0:
            return out
        out.append(text.count("\n", 0, i) + 1)
        start = i + 1


def _line_score(line: str, wanted: str) -> float:
    """Similarity of a file line to a line of SEARCH: the whole line, or its start (models usually get
    the start right and the rest — spacing, comments — wrong)."""
    a, b = line.strip(), wanted.strip()
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    whole = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    start = difflib.SequenceMatcher(None, a[: len(b) + 2], b, autojunk=False).ratio()
    return max(whole, start)


def nearest_lines(text: str, search: str, context: int = 2) -> str:
    """The window of the file most similar to `search`, numbered, with `context` lines around it."""
    lines = text.splitlines()
    if not lines:
        return "(the file is empty)"
    wanted = (search.strip("\n").splitlines() or [search])[:40]
    n = min(len(wanted), len(lines))
    best, best_start = -1.0, 0
    scores: dict[tuple[int, int], float] = {}
    for start in range(0, len(lines) - n + 1):
        total = 0.0
        for j in range(n):
            key = (start + j, j)
            if key not in scores:
                scores[key] = _line_score(lines[start + j], wanted[j])
            total += scores[key]
        if total > best:
            best, best_start = total, start
    lo = max(0, best_start - context)
    hi = min(len(lines), best_start + n + context)
    return "\n".join(f"{i + 1:5d}| {lines[i]}" for i in range(lo, hi))


def check_edits(task: TaskSpec, files: dict[str, str], edits: list[Edit]) -> list[str]:
    """What goes wrong applying `edits` in order to `files` (relative path -> text), each problem
    with the nearest lines; [] when they all apply (as `task.apply_edits` will)."""
    files = dict(files)
    problems = []
    for i, edit in enumerate(edits):
        where = f"edit {i + 1} ({edit.path})"
        if edit.path not in task.editable:
            problems.append(f"{where}: not an editable file; editable files: {', '.join(task.editable)}")
            continue
        text = files.get(edit.path, "")
        count = text.count(edit.search) if edit.search else 0
        if count == 1:
            files[edit.path] = text.replace(edit.search, edit.replace)
        elif count == 0:
            problems.append(f"{where}: the search text does not occur in the champion's file. The nearest lines:\n"
                            f"{nearest_lines(text, edit.search or ' ')}")
        else:
            problems.append(f"{where}: the search text occurs {count} times (lines "
                            f"{', '.join(map(str, occurrences(text, edit.search)[:10]))}); make it unique")
    return problems


def read_program(folder: Path, names: Iterable[str]) -> dict[str, str]:
    """The named files of a program folder (symbolic links and missing files skipped)."""
    out = {}
    for name in names:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            out[name] = _text(path)
    return out
