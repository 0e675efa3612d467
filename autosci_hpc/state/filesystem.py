"""Which filesystem holds the campaign folder, and the SQLite journal mode that implies.

WAL keeps its index in shared memory (`-shm`) and so needs every connection on one host; on a
network or FUSE filesystem that is unsafe, so those get the rollback journal (`DELETE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Filesystem types on which WAL's shared memory cannot be trusted.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "cephfs",
        "glusterfs", "9p", "afs", "panfs", "wekafs", "pvfs2", "orangefs", "fuse", "fuseblk",
    }
)


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mounts(text: str) -> list[Mount]:
    """Parse the `/proc/mounts` format: `source point fstype options dump pass`."""
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            mounts.append(Mount(point=_unescape(parts[1]), fstype=parts[2], source=parts[0]))
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount whose point is the longest prefix of `path` (the last one wins on ties)."""
    target = str(path)
    best: Mount | None = None
    for mount in mounts:
        point = mount.point.rstrip("/") or "/"
        inside = target == point or target.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.point.rstrip("/") or "/")):
            best = mount
    return best


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.resolve()


def filesystem_of(path: Path, mounts_file: Path = Path("/proc/mounts")) -> Mount | None:
    try:
        text = mounts_file.read_text()
    except OSError:
        return None
    return mount_of(_existing_ancestor(path), parse_mounts(text))


def is_network(fstype: str) -> bool:
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse.")


def journal_mode_for(path: Path, override: str = "auto", mounts_file: Path = Path("/proc/mounts")) -> str:
    """`wal` on a local disk, `delete` (rollback journal) on network/FUSE filesystems.

    `override` is the campaign's `state.journal_mode`: `auto` decides from the mount table.
    An unknown filesystem (no mount table) is treated as network: the safe choice.
    """
    if override != "auto":
        return override
    mount = filesystem_of(path, mounts_file)
    if mount is None or is_network(mount.fstype):
        return "delete"
    return "wal"


def describe(path: Path) -> str:
    mount = filesystem_of(path)
    if mount is None:
        return "unknown filesystem (no mount table)"
    kind = "network/FUSE" if is_network(mount.fstype) else "local"
    return f"{mount.fstype} ({kind}) mounted at {mount.point}"


__all__ = ["Mount", "parse_mounts", "mount_of", "filesystem_of", "journal_mode_for", "describe",
           "NETWORK_FILESYSTEMS", "is_network"]
