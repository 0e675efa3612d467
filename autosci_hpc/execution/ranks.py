"""Run a training step as N ranks on a node, one per GPU: `python ranks.py N -- command...`.

Each rank gets what torchrun would give it (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, GROUP_RANK; NODE_RANK too) and sees every GPU of its node
(CUDA_VISIBLE_DEVICES unchanged; local rank r uses the r-th, as programs written for torchrun do with
LOCAL_RANK). When one rank fails the others are stopped, and the step's status is the first non-zero
one. A plain script with no imports of the package: it runs inside the trial's sandbox, where only the
interpreter is certain.

A trial on several nodes runs this on each node with the node's index, the node count and where the
ranks meet (the first node's host and a port it chose): `python ranks.py N --node K --nodes M
--master HOST:PORT -- command...`. Node K's local rank r is then RANK K*N + r of WORLD_SIZE M*N.
Alone (no --master) the ranks meet on 127.0.0.1, at a free port of the node.
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


def rank_env(base: dict[str, str], local: int, per_node: int, port: int, *, node: int = 0, nodes: int = 1,
             master: str = "127.0.0.1") -> dict[str, str]:
    """The environment of local rank `local` of `per_node` on node `node` of `nodes`."""
    return {**base, "RANK": str(node * per_node + local), "LOCAL_RANK": str(local),
            "WORLD_SIZE": str(nodes * per_node), "LOCAL_WORLD_SIZE": str(per_node), "GROUP_RANK": str(node),
            "NODE_RANK": str(node), "MASTER_ADDR": master, "MASTER_PORT": str(port)}


USAGE = "usage: ranks.py N [--node K --nodes M --master HOST:PORT] -- command [args...]"


def parse(argv: list[str]) -> tuple[int, int, int, str, int, list[str]]:
    """(ranks per node, node, nodes, master host, master port (0: choose one), command); ValueError if bad."""
    if "--" not in argv:
        raise ValueError("no '--' before the command")
    cut = argv.index("--")
    head, command = argv[:cut], argv[cut + 1:]
    if not head or not head[0].isdigit() or int(head[0]) < 1 or not command:
        raise ValueError("N must be a positive count, and a command must follow '--'")
    options = dict(zip(head[1::2], head[2::2]))
    if len(head[1:]) % 2 or set(options) - {"--node", "--nodes", "--master"}:
        raise ValueError(f"unknown options {head[1:]}")
    node, nodes = int(options.get("--node", "0")), int(options.get("--nodes", "1"))
    host, _, port = options.get("--master", "127.0.0.1:0").rpartition(":")
    if not 0 <= node < nodes or not host or not port.isdigit() or (nodes > 1 and "--master" not in options):
        raise ValueError("--node K --nodes M need 0 <= K < M, and several nodes need --master HOST:PORT")
    return int(head[0]), node, nodes, host, int(port), command


def main(argv: list[str]) -> int:
    try:
        per_node, node, nodes, master, port, command = parse(argv)
    except ValueError as exc:
        print(f"ranks.py: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    port = port or free_port()
    procs = [subprocess.Popen(command, env=rank_env(dict(os.environ), local, per_node, port, node=node,
                                                    nodes=nodes, master=master))
             for local in range(per_node)]

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
