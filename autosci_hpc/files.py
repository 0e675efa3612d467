"""Files written so that a reader never sees half of one: the result files, manifests and specs
that cross from a compute node (or a crash) to the coordinator."""

from __future__ import annotations

import os
from pathlib import Path


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
