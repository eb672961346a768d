"""One writer per sweep dir: `sweep`, `resume` (and a submitted sweep's driver) hold `<sweep>/.writer.lock`
while they run; `report`, `sql`, `verify` and `status` only read and take nothing.

The lock is a small JSON file created exclusively (`O_EXCL` locally and on NFS v3+, a conditional PUT,
`If-None-Match: *`, on S3), naming its holder: host, pid, when it started and a heartbeat that a daemon
thread refreshes every `HEARTBEAT_S`. A lock is stale, and taken over with a warning, when its holder's pid
is gone on this host or its heartbeat is older than `STALE_AFTER_S` (a holder on another host that died, or a
frozen one). A second writer otherwise fails at once, naming the holder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Optional

from raysweep.spec.errors import SweepDirError
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import StoragePath, atomic_write_text, is_remote, temporary_sibling

log = logging.getLogger("raysweep")

HEARTBEAT_S = float(os.environ.get("RAYSWEEP_LOCK_HEARTBEAT_S", 30))
STALE_AFTER_S = float(os.environ.get("RAYSWEEP_LOCK_STALE_AFTER_S", 300))


class SweepLockedError(SweepDirError):
    """Another writer holds the sweep dir."""


def _holder_text(holder: dict) -> str:
    if "pid" not in holder:
        return "a lock file that names no holder"
    age = time.time() - holder.get("heartbeat", 0)
    return (f"{holder.get('command', 'a writer')} (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"heartbeat {age:.0f} s ago)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def stale_reason(holder: dict, now: Optional[float] = None) -> Optional[str]:
    """Why a lock's holder can no longer be writing (None: it may be)."""
    now = time.time() if now is None else now
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
            and not _pid_alive(holder["pid"]):
        return f"its pid {holder['pid']} is gone on this host"
    heartbeat = holder.get("heartbeat")
    if not isinstance(heartbeat, (int, float)) or now - heartbeat > STALE_AFTER_S:
        return f"its heartbeat is older than {STALE_AFTER_S:.0f} s"
    return None


def _read_holder(path: StoragePath) -> Optional[dict]:
    try:
        holder = json.loads(path.read_text())
        if isinstance(holder, dict):
            return holder
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        pass
    try:  # torn, foreign or still being written: its file's age stands for the heartbeat it lacks
        return {"heartbeat": path.stat().st_mtime}
    except FileNotFoundError:
        return None


def _create_exclusive(path: StoragePath, text: str) -> bool:
    """Create `path` holding `text` unless it exists; True when this call created it."""
    if is_remote(path):
        try:
            path.fs.pipe_file(path.path, text.encode(), mode="create")  # S3: PUT with If-None-Match: *
        except FileExistsError:
            return False
        return True
    tmp = temporary_sibling(path)
    tmp.write_text(text)
    try:
        os.link(tmp, path)  # atomic create-if-absent with the content already in place, also on NFS
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
        return _create_exclusive_without_links(path, text)  # a filesystem without hard links
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _create_exclusive_without_links(path: StoragePath, text: str) -> bool:
    """O_EXCL, then the content: a reader in between sees an empty lock, which counts as live by its mtime."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return True


class WriterLock:
    """The writer lock of one sweep dir, held from `acquire` to `release`."""

    def __init__(self, layout: SweepLayout, command: str, heartbeat_s: float = HEARTBEAT_S):
        self.heartbeat_s = heartbeat_s
        self.path = layout.writer_lock_file
        self.token = uuid.uuid4().hex
        self.holder = {"command": command, "host": socket.gethostname(), "pid": os.getpid(),
                       "token": self.token, "started": time.time(), "heartbeat": time.time()}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def acquire(self) -> None:
        for _ in range(3):  # a lost race with another taker of a stale lock is judged again
            if _create_exclusive(self.path, json.dumps(self.holder)):
                self._thread = threading.Thread(target=self._beat, name="raysweep-writer-lock", daemon=True)
                self._thread.start()
                return
            holder = _read_holder(self.path)
            if holder is None:
                continue  # released between our create and our read
            reason = stale_reason(holder)
            if reason is None:
                raise SweepLockedError(f"{self.path}: the sweep dir is being written by {_holder_text(holder)}; "
                                       "wait for it to finish, or stop it (its lock is taken over once its pid is "
                                       f"gone or its heartbeat is {STALE_AFTER_S:.0f} s old)")
            log.warning("taking over the writer lock %s from %s: %s", self.path, _holder_text(holder), reason)
            self._remove_if(holder)
        raise SweepLockedError(f"{self.path}: other writers keep taking this sweep dir's lock; run one at a time")

    def _remove_if(self, holder: dict) -> None:
        """Remove the lock file if it still holds `holder` (another taker may have replaced it)."""
        current = _read_holder(self.path)
        if current is not None and current.get("token") == holder.get("token"):
            self.path.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            current = _read_holder(self.path)
            if current is None or current.get("token") != self.token:
                log.error("the writer lock %s was taken over by %s; this writer's results may be overwritten",
                          self.path, _holder_text(current or {}))
                return
            self.holder["heartbeat"] = time.time()
            try:
                atomic_write_text(self.path, json.dumps(self.holder))
            except OSError as exc:  # storage hiccup: the next beat tries again, well inside the stale limit
                log.warning("could not refresh the writer lock %s: %s", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._remove_if(self.holder)


@contextmanager
def writer_lock(layout: SweepLayout, command: str) -> Iterator[WriterLock]:
    """Hold the sweep dir's writer lock for the block (see the module docstring)."""
    lock = WriterLock(layout, command)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def check_not_locked(layout: SweepLayout) -> None:
    """Fail now if a live writer holds the sweep dir (for `submit`, whose job takes the lock on the cluster)."""
    holder = _read_holder(layout.writer_lock_file)
    if holder is not None and stale_reason(holder) is None:
        raise SweepLockedError(f"{layout.writer_lock_file}: the sweep dir is being written by "
                               f"{_holder_text(holder)}; wait for it to finish before submitting it again")
