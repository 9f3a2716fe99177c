"""Run locks for sweeps sharing a filesystem: an exclusive lock file with a heartbeat.

A lock is a file created with O_CREAT|O_EXCL holding "HOST PID TOKEN". While held, a daemon thread
touches it every `heartbeat_s` seconds. A lock is stale, and may be broken by anyone, when its holder is
a dead process on this host, or when it has not been touched for `stale_after_s` seconds (a holder on
another machine that was killed). Breaking renames the file away first, so two waiters cannot both
break it, and puts it back if it turns out to belong to a new holder.
"""

import contextlib
import os
import socket
import threading
import time
import uuid

HOST = socket.gethostname()


class Lock:
    """One lock file; `acquire()` once, `release()` in a `finally`."""

    def __init__(self, path, heartbeat_s=30.0):
        self.path = path
        self.token = f"{HOST} {os.getpid()} {uuid.uuid4().hex}"
        self.heartbeat_s = heartbeat_s
        self._stop = threading.Event()
        self._thread = None

    def acquire(self):
        """True when this call created the lock file (and started its heartbeat)."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self.token)
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return True

    def _beat(self):
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self):
        """Stop the heartbeat and remove the file if it still holds this lock's token."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if _read(self.path) == self.token:
            os.remove(self.path)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(path):
    """'HOST pid PID' of the lock at `path`, or None when there is none."""
    token = _read(path)
    parts = (token or "").split()
    return f"{parts[0]} pid {parts[1]}" if len(parts) == 3 else None


def is_stale(path, stale_after_s):
    """True when the lock at `path` belongs to a dead local process or has not been touched for
    `stale_after_s` seconds; False when it is live or absent."""
    token = _read(path)
    if token is None:
        return False
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    parts = token.split()
    if len(parts) == 3 and parts[0] == HOST and parts[1].isdigit() and not _alive(int(parts[1])):
        return True
    return age > stale_after_s


def break_if_stale(path, stale_after_s):
    """Remove the lock at `path` when it is stale; True when it was removed."""
    token = _read(path)
    if token is None or not is_stale(path, stale_after_s):
        return False
    tomb = f"{path}.stale-{uuid.uuid4().hex}"
    try:
        os.rename(path, tomb)
    except FileNotFoundError:
        return False
    if _read(tomb) != token:  # a new holder took the lock after we read it: give it back
        try:
            os.link(tomb, path)
        except FileExistsError:
            pass
        os.remove(tomb)
        return False
    os.remove(tomb)
    return True


@contextlib.contextmanager
def hold(path, poll_s=1.0, stale_after_s=900.0):
    """Context manager: wait until the lock at `path` is acquired (breaking stale ones), hold it."""
    lock = Lock(path)
    while not lock.acquire():
        if not break_if_stale(path, stale_after_s):
            time.sleep(poll_s)
    try:
        yield lock
    finally:
        lock.release()
