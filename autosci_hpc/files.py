"""Files written so that a reader never sees half of one: the result files, manifests and specs
that cross from a compute node (or a crash) to the coordinator."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write-temp + fsync + rename: readers see the old file or the new one, never a part.

    On failure (disk full, quota) the temp file is removed and the error names the file; whatever
    `path` held before is left as it was.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"could not write {path}: {exc.strerror or exc}") from exc
    # fsync the directory so the rename itself survives a crash of the node.
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def yaml_problem(exc: BaseException) -> str:
    """A YAML (or omegaconf) error in one line: where (line, column) and what, without the multi-line excerpt
    the parser prints (a bad input gets one line naming the file, which the caller puts first)."""
    mark: Any = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = " ".join(str(getattr(exc, "problem", "") or "").split())
    context = " ".join(str(getattr(exc, "context", "") or "").split())
    if not problem:  # another parser's error (omegaconf's interpolations, a file's encoding): its first line
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return " ".join(first.split())[:300]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")
