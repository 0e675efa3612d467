"""sbatch/launch_campaign.sh: the header a cluster user expects, and signal forwarding that works.

The forwarding test runs the real script under bash with a stand-in `autosci` on PATH (no Slurm
needed): the batch shell receives USR1, as `--signal=B:USR1@300` delivers it, and the coordinator
must get it at once. A script that ran the coordinator in the foreground would only run its trap
after the child exited, and this test would time out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from helpers import ROOT

SCRIPT = ROOT / "sbatch" / "launch_campaign.sh"


def test_the_header_asks_for_requeue_append_and_an_early_warning_signal() -> None:
    text = SCRIPT.read_text()
    for line in ("#SBATCH --requeue", "#SBATCH --open-mode=append", "#SBATCH --signal=B:USR1@300"):
        assert line in text
    assert "autosci coordinate" in text and "wait" in text


def test_the_warning_signal_reaches_the_coordinator_at_once(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    marker = tmp_path / "got-usr1"
    (bindir / "autosci").write_text(
        "#!/usr/bin/env python3\n"
        "import signal, sys, time, pathlib\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "def stop(*_):\n"
        "    marker.write_text('USR1')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGUSR1, stop)\n"
        "pathlib.Path(marker.parent / 'ready').write_text('1')\n"
        "time.sleep(60)\n"
        "sys.exit(5)\n")
    (bindir / "autosci").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "AUTOSCI_VENV": str(tmp_path / "no-venv")}
    env.pop("SLURM_SUBMIT_DIR", None)
    proc = subprocess.Popen(["bash", str(SCRIPT), "configs/campaign/x.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "ready").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=20)
    assert time.monotonic() - sent < 5, out
    assert marker.read_text() == "USR1" and "caught USR1" in out
    assert proc.returncode == 0  # the script exits with the coordinator's status
