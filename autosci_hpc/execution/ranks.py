"""Run a training step as N ranks on one node, one per GPU: `python ranks.py N -- command...`.

Each rank gets what torchrun would give it (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) and sees every GPU of the trial (CUDA_VISIBLE_DEVICES unchanged; rank r
uses the r-th, as programs written for torchrun do with LOCAL_RANK). When one rank fails the others
are stopped, and the step's status is the first non-zero one. A plain script with no imports of
the package: it runs inside the trial's sandbox, where only the interpreter is certain.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rank_env(base: dict[str, str], rank: int, world: int, port: int) -> dict[str, str]:
    return {**base, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: ranks.py N -- command [args...]", file=sys.stderr)
        return 2
    world, command = int(argv[0]), argv[2:]
    port = free_port()
    procs = [subprocess.Popen(command, env=rank_env(dict(os.environ), rank, world, port))
             for rank in range(world)]

    def stop(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while any(proc.poll() is None for proc in procs):
        failed = [proc.returncode for proc in procs if proc.returncode not in (None, 0)]
        if failed and status == 0:
            status = failed[0]
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
        time.sleep(0.05)
    if status == 0:
        status = next((proc.returncode for proc in procs if proc.returncode != 0), 0)
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
