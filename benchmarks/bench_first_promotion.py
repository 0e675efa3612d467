"""Time to first promotion of `make run` (configs/campaign/diabetes_demo.yaml) on 2 cores, against
the single-agent mode on the same config.

    python benchmarks/bench_first_promotion.py
    python benchmarks/bench_first_promotion.py --complete        # let both campaigns run to their end

The clock starts when `autosci run` is launched (interpreter start-up, baseline and discussion
included: what a user waits for) and stops at the campaign's first `champion.promoted` event (a
candidate that beat the baseline champion over its seeds, not the baseline itself). The campaign
is then stopped, unless `--complete`. On a machine with more than 2 CPUs the run is pinned to 2
with taskset. The baseline is the same config with `coordination.mode=single` (one agent: propose,
run, keep or discard); without that mode only the absolute figure is reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib as bl  # noqa: E402

NAME = "time to first promotion"
CONFIG = bl.ROOT / "configs" / "campaign" / "diabetes_demo.yaml"


@dataclass
class FirstPromotion:
    mode: str
    #: Seconds from launch to the first champion.promoted event; None if none came.
    seconds: Optional[float]
    baseline_champion_s: Optional[float]
    trials_finished: int
    ended: str  # "stopped at the first promotion" | "finished" | "timed out"
    pinning: str


def _first(con: Any, kind: str) -> Optional[float]:
    row = con.execute("select min(created_at) from event where kind = ?", (kind,)).fetchone()
    return bl.db_time(row[0]) if row and row[0] else None


def _poll(folder: Path) -> Optional[float]:
    """The first promotion so far, None before it (or before the database has its tables)."""
    if not (folder / "state.db").exists():
        return None
    try:
        con = bl.read_db(folder)
        try:
            return _first(con, "champion.promoted")
        finally:
            con.close()
    except sqlite3.OperationalError:
        return None


def _campaign_processes(folder: Path) -> list[int]:
    """Processes still working in the campaign folder (trial programs run in their own session, so
    stopping the coordinator's process group leaves them): this benchmark started them."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(int(proc.name))
    return found


def _stop(proc: subprocess.Popen[bytes], folder: Path) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for pid in _campaign_processes(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def measure(tmp: Path, mode: str, cores: int, complete: bool, timeout_s: float) -> FirstPromotion:
    folder = tmp / f"campaign-{mode}"
    overrides = [f"campaign.folder={folder}", f"coordination.mode={mode}", "--quiet"]
    argv, pinning = bl.pinned(bl.autosci_argv("run", CONFIG, overrides), cores)
    log = open(tmp / f"{mode}.log", "wb")
    launched = time.time()
    # Its own session, so that stopping it early stops the coordinator and its local job controllers.
    proc = subprocess.Popen(argv, cwd=bl.ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    promoted = None
    ended = "timed out"
    try:
        while time.time() - launched < timeout_s:
            promoted = _poll(folder)
            if proc.poll() is not None:
                ended = "finished"
                break
            if promoted is not None and not complete:
                ended = "stopped at the first promotion"
                break
            time.sleep(0.2)
    finally:
        _stop(proc, folder)
        log.close()
    con = bl.read_db(folder)
    promoted = _first(con, "champion.promoted")
    baseline = _first(con, "champion.baseline")
    finished = con.execute("select count(*) from trial where finished_at is not null"
                           + (" and finished_at <= ?" if promoted else ""),
                           (datetime_text(promoted),) if promoted else ()).fetchone()[0]
    con.close()
    return FirstPromotion(mode=mode, seconds=None if promoted is None else round(promoted - launched, 1),
                          baseline_champion_s=None if baseline is None else round(baseline - launched, 1),
                          trials_finished=finished, ended=ended, pinning=pinning)


def datetime_text(epoch: Optional[float]) -> str:
    """Epoch seconds as the database writes timestamps (UTC, naive), for comparisons in SQL."""
    from datetime import datetime, timezone

    assert epoch is not None
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


def run(quick: bool = True, *, cores: int = 2, complete: bool = False, timeout_s: float = 300,
        keep: bool = False) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="autosci-bench-first-"))
    try:
        ours = measure(tmp, "decentralized", cores, complete, timeout_s)
        theirs = measure(tmp, "single", cores, complete, timeout_s)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(ours, theirs, cores)


def _text(m: FirstPromotion) -> str:
    if m.seconds is None:
        return f"none in {m.trials_finished} trials ({m.ended})"
    return f"{m.seconds:g} s ({m.trials_finished} trials)"


def report(ours: FirstPromotion, theirs: FirstPromotion, cores: int) -> dict[str, Any]:
    speed = bl.ratio(ours.seconds, theirs.seconds)
    rows = [bl.row(f"seconds from `autosci run` to the first promotion (make run config, {cores} cores)",
                   _text(ours), _text(theirs) + " single mode", bl.fmt_ratio(speed),
                   "none set (measured)", None)]
    summary = (f"make run's campaign promoted its first candidate {_text(ours)} after launch "
               f"(baseline champion at {ours.baseline_champion_s} s); single-agent mode: {_text(theirs)}")
    return bl.result(NAME, summary, sizes={"config": str(CONFIG.relative_to(bl.ROOT)), "cores": cores,
                                           "pinning": ours.pinning},
                     measured=asdict(ours), baseline=asdict(theirs),
                     ratios={"time_vs_single": speed}, targets={}, rows=rows)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cores", type=int, help="CPUs to run on (taskset on bigger machines; default 2)")
    parser.add_argument("--complete", action="store_true", default=None, help="let the campaigns finish")
    parser.add_argument("--timeout-s", dest="timeout_s", type=float, help="give up on a campaign after this long")
    parser.add_argument("--keep", action="store_true", default=None, help="keep the campaign folders")


if __name__ == "__main__":
    sys.exit(bl.main(run, __doc__, _options))
