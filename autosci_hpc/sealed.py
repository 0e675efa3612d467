"""Helpers for sealed evaluators: call the program's own code in a process of its own.

Under task contract 2 the evaluator (not editable, frozen into the campaign) measures what the
program produced. Where a measurement needs the program's code (a model's forward pass, a predict
entry point), that code must not run inside the evaluator's process: code there could read the
evaluator's variables, labels included, or patch its scoring functions. `ProgramProcess` starts
the program's declared entry point in a child process with the program folder as its working
directory, and talks to it through a pipe that carries only numeric arrays: the inputs the
evaluator chooses to send, the outputs the program returns. The child gets no path to the sealed
data and no labels; whatever it returns is validated here (size, dtype, finiteness is left to the
caller), and a child that hangs, dies or speaks out of protocol becomes a `ProgramCallError`.

Entry points are "module:function" names in the program folder. The function is a factory: it is
called once with the artifacts folder and returns a callable that maps a dict of numpy arrays to
a numpy array or a dict of them. Example (`load` in tasks/diabetes/program/train.py)::

    def load(artifacts):
        model = pickle.load(open(os.path.join(artifacts, "model.pkl"), "rb"))
        return lambda inputs: model.predict(inputs["X"])

Run as `python -m autosci_hpc.sealed PROGRAM_DIR ENTRY ARTIFACTS` it is the child side.
"""

from __future__ import annotations

import io
import json
import math
import os
import select
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .procs import kill_group

if TYPE_CHECKING:  # numpy is imported where arrays are handled: write_metrics alone needs none
    import numpy as np

#: Environment variables the child never inherits: the sealed data's location, the metrics file.
_SEALED_ENV = ("AUTOSCI_SEALED", "AUTOSCI_METRICS", "AUTOSCI_EVALUATOR")
_HEADER = struct.Struct(">cQ")  # tag (O ok, E error, R ready), payload length
DEFAULT_MAX_BYTES = 1 << 30


class ProgramCallError(RuntimeError):
    """The program's entry point failed, hung, or answered something that is not a valid output."""


def _pack(arrays: Mapping[str, Any]) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **{str(k): np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


def _unpack(payload: bytes) -> dict[str, np.ndarray]:
    """Arrays out of an .npz payload, refusing pickled objects and non-numeric dtypes."""
    import numpy as np

    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as data:
            out = {name: data[name] for name in data.files}
    except Exception as exc:  # noqa: BLE001 - hostile bytes: any parse error is one clear error
        raise ProgramCallError(f"the program's answer is not a valid array bundle: {exc}") from None
    for name, array in out.items():
        if array.dtype.kind not in "biuf":
            raise ProgramCallError(f"the program's output '{name}' has dtype {array.dtype}, not numeric")
    return out


def _read_exact(fd: int, size: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class ProgramProcess:
    """The program's entry point, running in a child process; `call` sends inputs, returns outputs.

    `timeout_s` bounds the child's whole life (loading included); `max_bytes` bounds one answer.
    Use it as a context manager so the child is always stopped.
    """

    def __init__(self, program_dir: Union[str, Path], entry: str, artifacts: Union[str, Path], *,
                 timeout_s: float = 600, max_bytes: int = DEFAULT_MAX_BYTES, log: Any = None,
                 python: str = sys.executable) -> None:
        if ":" not in entry:
            raise ValueError(f"entry point {entry!r} must be 'module:function'")
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        env = {k: v for k, v in os.environ.items() if k not in _SEALED_ENV}
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [python, "-m", "autosci_hpc.sealed", str(Path(program_dir).resolve()), entry,
             str(Path(artifacts).resolve())],
            cwd=str(program_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log if log is not None else None, env=env, start_new_session=True)
        self._expect_ready()

    def __enter__(self) -> "ProgramProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            kill_group(self.proc, grace_s=1.0)

    def _receive(self) -> tuple[bytes, bytes]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            tag, size = _HEADER.unpack(_read_exact(fd, _HEADER.size, self.deadline))
            if size > self.max_bytes:
                raise ProgramCallError(f"the program's answer is {size} bytes, over the limit of "
                                       f"{self.max_bytes}")
            return tag, _read_exact(fd, size, self.deadline)
        except TimeoutError:
            self.close()
            raise ProgramCallError(f"the program's entry point ran past {self.timeout_s:g} s") from None
        except EOFError:
            self.close()
            raise ProgramCallError(f"the program's entry point exited (status {self.proc.poll()}) "
                                   "before answering") from None

    def _expect_ready(self) -> None:
        tag, payload = self._receive()
        if tag == b"E":
            self.close()
            text = payload.decode(errors="replace")[-2000:]
            raise ProgramCallError(f"the program's entry point failed to load: {text}")
        if tag != b"R":
            self.close()
            raise ProgramCallError("the program's entry point spoke out of protocol")

    def call(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Send named arrays, get named arrays back ("output" when the program returned one array)."""
        assert self.proc.stdin is not None
        payload = _pack(inputs)
        try:
            self.proc.stdin.write(_HEADER.pack(b"I", len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.close()
            raise ProgramCallError(f"the program's entry point exited (status {self.proc.poll()})") from None
        tag, answer = self._receive()
        if tag == b"E":
            text = answer.decode(errors="replace")[-2000:]
            raise ProgramCallError(f"the program's entry point failed: {text}")
        if tag != b"O":
            self.close()
            raise ProgramCallError("the program's entry point spoke out of protocol")
        return _unpack(answer)


def predictions(outputs: Mapping[str, np.ndarray], n: int, name: str = "output") -> np.ndarray:
    """One finite float vector of length n out of a program's answer, or `ProgramCallError`."""
    import numpy as np

    if name not in outputs:
        returned = ", ".join(outputs) or "nothing"
        raise ProgramCallError(f"the program returned no '{name}' (it returned: {returned})")
    array = np.asarray(outputs[name], dtype=float).reshape(-1) if outputs[name].size == n else None
    if array is None:
        raise ProgramCallError(f"expected {n} predictions, got shape {outputs[name].shape}")
    if not np.all(np.isfinite(array)):
        raise ProgramCallError("the program predicted non-finite values")
    return array


def encode_strings(strings: list[str], name: str = "text") -> dict[str, np.ndarray]:
    """Strings (SMILES, sequences) as two numeric arrays, the only kind the pipe carries."""
    import numpy as np

    blobs = [s.encode("utf-8") for s in strings]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()
    return {f"{name}_bytes": data, f"{name}_offsets": offsets}


def decode_strings(inputs: Mapping[str, np.ndarray], name: str = "text") -> list[str]:
    """The strings `encode_strings` packed (for the program's side)."""
    import numpy as np

    data = np.asarray(inputs[f"{name}_bytes"], dtype=np.uint8).tobytes()
    offsets = np.asarray(inputs[f"{name}_offsets"], dtype=np.int64)
    return [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]


def write_metrics(path: Union[str, Path], metrics: Mapping[str, Any]) -> None:
    """The evaluator's metrics file: one JSON object, finite numbers only (NaN is refused)."""
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"metric {key!r} is not finite: {value!r}")
    Path(path).write_text(json.dumps(dict(metrics), allow_nan=False, sort_keys=True))


# ---- the child side --------------------------------------------------------------------------


def _child(program_dir: str, entry: str, artifacts: str) -> int:
    # The protocol owns the original stdout; whatever the program prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inbox = sys.stdin.buffer

    def send(tag: bytes, payload: bytes) -> None:
        channel.write(_HEADER.pack(tag, len(payload)) + payload)
        channel.flush()

    sys.path.insert(0, program_dir)
    module_name, function_name = entry.split(":", 1)
    try:
        import importlib

        factory = getattr(importlib.import_module(module_name), function_name)
        predict = factory(artifacts)
    except BaseException as exc:  # noqa: BLE001 - report any load failure to the evaluator
        send(b"E", f"{type(exc).__name__}: {exc}".encode())
        return 1
    send(b"R", b"")
    while True:
        header = inbox.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return 0
        _tag, size = _HEADER.unpack(header)
        inputs = _unpack(inbox.read(size))
        try:
            out = predict(inputs)
            arrays = out if isinstance(out, dict) else {"output": out}
            send(b"O", _pack(arrays))
        except BaseException as exc:  # noqa: BLE001
            send(b"E", f"{type(exc).__name__}: {exc}".encode())


def _main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m autosci_hpc.sealed PROGRAM_DIR MODULE:FUNCTION ARTIFACTS", file=sys.stderr)
        return 2
    return _child(*args)


if __name__ == "__main__":
    sys.exit(_main())
