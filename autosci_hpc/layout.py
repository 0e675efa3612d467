"""The campaign folder's layout: every file and folder a campaign keeps, named in one place.

A campaign is one folder. Everything that reads or writes inside it (the coordinator, the agents,
the node-side trial runner, reruns, reports) finds its way through a `CampaignLayout`, so a name
is spelled once and a reader of this module sees the whole folder:

    state.db                 the shared state (SQLite)
    task.json                the task as it was when the campaign began
    snapshots/<id>/          content-addressed copies of the program, one per version
    trials/<id>[-attemptN]/  one folder per trial attempt: its log, result file, artifacts
    reruns/                  `autosci rerun`'s trials, and their scheduler files (reruns/jobs/)
    jobs/                    the executor's files (submitit's pickles and job logs)
    data/                    the prepared data: visible/[split-k/] for training, sealed/ for scoring
    evaluator/               the frozen copy of the sealed evaluator, and its hashes beside it
    scratch/                 the LLM experimenters' private working copies
    transcripts/             every model conversation, for audit
    served/                  the model served on the cluster (job script, endpoint, restarts)
    report.txt               `autosci run`'s closing report
    report.html              `autosci report`'s one-file report (unless told to write it elsewhere)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


def visible_data(data_folder: Path, split: int, splits: int) -> Path:
    """The visible data the training step of `split` is given, inside a prepared data folder (task
    contract 2: one folder per split when the task has several)."""
    visible = Path(data_folder) / "visible"
    return visible / f"split-{split}" if splits > 1 else visible


def sealed_data(data_folder: Path) -> Path:
    """Validation labels and held-out data, inside a prepared data folder: the evaluator's alone."""
    return Path(data_folder) / "sealed"


@dataclass(frozen=True)
class CampaignLayout:
    """Where each part of the campaign rooted at `root` lives. Pure path arithmetic: it creates nothing."""

    root: Path

    DATABASE: ClassVar[str] = "state.db"
    TASK_SPEC: ClassVar[str] = "task.json"
    SNAPSHOTS: ClassVar[str] = "snapshots"
    TRIALS: ClassVar[str] = "trials"
    RERUNS: ClassVar[str] = "reruns"
    JOBS: ClassVar[str] = "jobs"
    DATA: ClassVar[str] = "data"
    EVALUATOR: ClassVar[str] = "evaluator"
    EVALUATOR_MANIFEST: ClassVar[str] = "evaluator.sha256.json"
    SCRATCH: ClassVar[str] = "scratch"
    TRANSCRIPTS: ClassVar[str] = "transcripts"
    SERVED: ClassVar[str] = "served"
    REPORT_TEXT: ClassVar[str] = "report.txt"
    REPORT_HTML: ClassVar[str] = "report.html"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def database(self) -> Path:
        return self.root / self.DATABASE

    @property
    def task_spec(self) -> Path:
        return self.root / self.TASK_SPEC

    @property
    def snapshots(self) -> Path:
        return self.root / self.SNAPSHOTS

    def snapshot(self, snapshot_id: str) -> Path:
        return self.snapshots / snapshot_id

    @property
    def trials(self) -> Path:
        return self.root / self.TRIALS

    def trial(self, trial_id: int, attempt: int = 0) -> Path:
        """Each trial row, and each attempt of it, runs in a folder of its own: a retry never shares
        (nor removes) the folder of the attempt it replaces."""
        name = f"{trial_id:06d}" if attempt == 0 else f"{trial_id:06d}-attempt{attempt}"
        return self.trials / name

    @property
    def reruns(self) -> Path:
        return self.root / self.RERUNS

    def rerun(self, trial_id: int, seed: int, stamp: str) -> Path:
        return self.reruns / f"{trial_id:06d}-seed{seed}-{stamp}"

    @property
    def jobs(self) -> Path:
        return self.root / self.JOBS

    @property
    def rerun_jobs(self) -> Path:
        return self.reruns / self.JOBS

    @property
    def data(self) -> Path:
        return self.root / self.DATA

    def data_visible(self, split: int, splits: int) -> Path:
        return visible_data(self.data, split, splits)

    @property
    def data_sealed(self) -> Path:
        return sealed_data(self.data)

    @property
    def evaluator(self) -> Path:
        return self.root / self.EVALUATOR

    @property
    def evaluator_manifest(self) -> Path:
        return self.root / self.EVALUATOR_MANIFEST

    @property
    def scratch(self) -> Path:
        return self.root / self.SCRATCH

    @property
    def transcripts(self) -> Path:
        return self.root / self.TRANSCRIPTS

    @property
    def served(self) -> Path:
        return self.root / self.SERVED

    @property
    def report_text(self) -> Path:
        return self.root / self.REPORT_TEXT

    @property
    def report_html(self) -> Path:
        return self.root / self.REPORT_HTML
