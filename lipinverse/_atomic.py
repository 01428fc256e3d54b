r"""Atomic file output: a temporary file in the target's folder, fsynced, then renamed.

A reader sees the old file or the new one, never a partial one; a failed write (full
disk, read-only folder, a path under a file) leaves the old file intact and removes the
temporary file. The temporary file's name carries the writer's process id; a writer killed
before it could clean up (SIGKILL) leaves one behind, and the next write of the same file
removes every such leftover whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "check_writable"]


@contextlib.contextmanager
def atomic_path(path):
    """Context manager yielding a temporary path (same folder, same suffix) to write to;
    on success the file is fsynced and renamed onto ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                               suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the mode a plain open() would give, not mkstemp's 0600
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _sweep(path: Path) -> None:
    """Remove the temporary files of earlier writes of ``path`` whose writer is gone."""
    prefix = f".{path.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            name = entry.name
            if not (name.startswith(prefix) and f".tmp{path.suffix}" in name):
                continue
            pid = name[len(prefix):].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def check_writable(path, what: str) -> None:
    """Raise ``ValueError`` (one line) if ``path`` cannot be written: its folder (or the
    nearest existing ancestor, for folders still to create) must be a writable folder."""
    p = Path(path).resolve()
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what}: cannot write '{path}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what}: cannot write '{path}': the folder '{parent}' is not "
                         "writable")
    if p.exists() and not os.access(p, os.W_OK) and not os.access(p.parent, os.W_OK):
        raise ValueError(f"{what}: cannot write '{path}': the file is read-only")
