"""Group commit: the write sets that a process's tasks have ready are written in one transaction.

Many small write transactions of the same kind (accepted messages in the web process, sent outcomes
in a worker) cost a transaction each: a commit, and on SQLite a turn of the database's one write lock,
held while each transaction's statements wait their turn on the event loop. A :class:`GroupCommit`
writes every item handed to :meth:`~GroupCommit.submit` since its last transaction in one transaction
(``write`` gets them all, as multi-row statements), and answers each caller once committed. An item
alone is written at once — no timer, no added latency; under load the batches form by themselves while
the previous one commits.

What a batch cannot write (one item's constraint, one organization's credits) does not become the
others' error: the batch is rolled back and each item written in a transaction of its own, so each
caller gets its own item's result or error. A database that is away fails every caller of the batch
(each has its own way to try again).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.config import is_connection_error, write_transaction
from app.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: ``write(session, items) -> one result per item, in order``, inside the batch's write transaction
Write = Callable[[AsyncSession, Sequence[T]], Awaitable[list[R]]]


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        sessions: Callable[[], AsyncSession],
        write: Write[T, R],
        *,
        name: str,
        owner: object = None,
        max_batch: int = 200,
        committed: Callable[[int], None] | None = None,
    ) -> None:
        self.sessions = sessions
        #: called with the number of items after each commit (the metrics)
        self.committed = committed
        self.owner = owner
        self.write = write
        self.name = name
        self.max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        #: transactions committed and items written (what the tests and the benchmarks read)
        self.transactions = 0
        self.written = 0

    async def submit(self, item: T) -> R:
        """Write ``item`` with the others ready now; its result once committed, or its own error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await asyncio.shield(future)  # a caller gone mid-write does not cancel the others' transaction

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            try:
                await self._batch(batch)
            except BaseException as exc:  # never leave a caller waiting
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    async def _transaction(self, items: Sequence[T]) -> list[R]:
        async with self.sessions() as session, write_transaction(session):
            results = await self.write(session, items)
        self.transactions += 1
        self.written += len(items)
        if self.committed is not None:
            self.committed(len(items))
        return results

    async def _batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._transaction([item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or is_connection_error(exc):
                for _, future in batch:
                    future.set_exception(exc)
                return
            log.info("group commit rolled back; one by one", writer=self.name, size=len(batch), error=repr(exc))
            for item, future in batch:
                try:
                    (result,) = await self._transaction([item])
                except Exception as own:
                    future.set_exception(own)
                else:
                    future.set_result(result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)


_ALL: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], GroupCommit[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)


def group_commit(
    name: str,
    owner: object,
    sessions: Callable[[], AsyncSession],
    write: Write[T, R],
    committed: Callable[[int], None] | None = None,
) -> GroupCommit[T, R]:
    """The running event loop's :class:`GroupCommit` called ``name`` for ``owner`` (an engine, a session
    factory: what its transactions write to), made on first use."""
    writers = _ALL.setdefault(asyncio.get_running_loop(), {})
    key = (name, id(owner))
    writer = writers.get(key)
    if writer is None or writer.owner is not owner:
        writer = writers[key] = GroupCommit(sessions, write, name=name, owner=owner, committed=committed)
    return writer


def writers() -> list[GroupCommit[Any, Any]]:
    """The group commits of every event loop of this process (their counters: what the tests read)."""
    return [writer for by_key in list(_ALL.values()) for writer in by_key.values()]
