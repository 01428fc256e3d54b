r"""One writer per run folder: a lock file that names its holder.

``run_lock(folder)`` creates ``folder/.lock`` exclusively (``O_CREAT | O_EXCL``) with the
holder's process id, host and start time, and removes it on exit. A second writer fails
at once with a :class:`RunFolderLocked` error that names the holder. A lock left by a
process that no longer runs on this host (killed) is taken over; the same process may
take the lock again (a recipe run holds it around each stage's trainer).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["run_lock", "RunFolderLocked"]

_HELD: dict[str, int] = {}  # lock path -> nesting depth in this process


class RunFolderLocked(RuntimeError):
    """Another live process writes into this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(path: Path) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            pid, host = holder.get("pid"), holder.get("host")
            if isinstance(pid, int) and host == me["host"] and not _alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its holder was killed
                continue
            raise RunFolderLocked(
                f"'{path.parent}' is being written by process {pid} on {host} since "
                f"{holder.get('started', '?')} (another 'lipinverse train'?); wait for it "
                f"to stop, or delete {path} if that process is gone") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return
    raise RunFolderLocked(f"could not take the lock {path}")


@contextlib.contextmanager
def run_lock(folder):
    """Hold ``folder/.lock`` for the duration of the block (reentrant in one process)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    key = str(path.resolve())
    if _HELD.get(key, 0) == 0:
        _acquire(path)
    _HELD[key] = _HELD.get(key, 0) + 1
    try:
        yield path
    finally:
        _HELD[key] -= 1
        if _HELD[key] == 0:
            del _HELD[key]
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
