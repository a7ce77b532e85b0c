"""One writer at a time on a SQLite database, across the processes that share it, woken in turn.

SQLite has one write lock per database. A connection that finds it taken waits in SQLite's busy
handler, which polls with sleeps of 1, 2, 5, 10 … 100 ms: a process whose writers come one after the
other (a worker applying outcomes) keeps finding it free, while another process's writer sleeps ever
longer between two looks and misses every gap (measured: the web's ``BEGIN IMMEDIATE`` waited 69 ms on
average behind a worker, docs/performance.md). So the writers that announce themselves
(:func:`app.db.config.write_transaction`) first queue on an asyncio lock in their process, then on an
exclusive ``flock`` of a file beside the database, which the kernel hands over the moment it is
released; the ``BEGIN IMMEDIATE`` that follows then finds SQLite's lock free (unless a writer that did
not announce itself holds it: the busy handler still covers those).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

#: one waiter per process blocks in the kernel; the others queue on the asyncio lock in front
_WAITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def lock_path(database: str | None) -> str | None:
    """The lock file of a SQLite database file (None for an in-memory database: one process only)."""
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return os.path.abspath(database) + "-writer.lock"


def process_lock(key: str) -> asyncio.Lock:
    """This process's (this event loop's) writer lock for ``key``."""
    locks = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock


async def _flock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    waiting = asyncio.get_running_loop().run_in_executor(_WAITER, fcntl.flock, fd, fcntl.LOCK_EX)
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:  # the lock still comes: the file must stay open until it does
        waiting.add_done_callback(lambda _: os.close(fd))
        raise


@asynccontextmanager
async def writer(database: str | None) -> AsyncIterator[None]:
    """Hold the write turn of the SQLite database file ``database`` (this process's, then every process's)."""
    path = lock_path(database)
    async with process_lock(path or ":memory:"):
        if path is None:
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # a flock belongs to the open file: closed, released
        try:
            await _flock(fd)
        except asyncio.CancelledError:
            raise  # _flock closes the file once the kernel has answered
        except BaseException:
            os.close(fd)
            raise
        try:
            yield
        finally:
            os.close(fd)
