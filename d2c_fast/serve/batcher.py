"""Dynamic batching for the server, with no web framework in it.

Requests that can share one engine call carry the same *key* (the endpoint and every setting
that is not per image: attribute, method, strength or target, mode, ...). The
:class:`Batcher` queues them; its one consumer takes the oldest waiting request, gathers the
other waiting requests with the same key (up to ``max_batch`` images), waits at most
``max_wait`` seconds for more while the batch is not full and other requests are still
being read (:meth:`Batcher.arrival`), and runs the whole group as ONE
call of the group's function in the engine thread (one thread: the model is used by one call
at a time, and the event loop stays free to accept and answer requests meanwhile). Each
request then gets its own slice of the result.

Overload: at most ``max_queue`` requests wait (those being computed do not count); one more
is refused at once with :class:`QueueFull` (the server answers 503 + Retry-After), so memory
is bounded by the queue and never grows with the offered load.

A request whose client went away is still computed if its batch has already started (the
other requests of that batch are not disturbed; its slice is dropped); one still waiting is
skipped.

One thread runs every torch op of the server (:func:`engine_thread`: it loads the model,
runs the batches, and :meth:`Batcher.call` for torch work outside a batch); other threads
use PIL and numpy only. With GNU OpenMP (torch's CPU wheels), once parallel regions have been
started from two threads, every op of both runs slower: on a 2-core CPU a batch-1 edit took
184 ms in a worker thread after the model had been loaded in the main thread, 69-76 ms when
one thread did both (a 1x32x16x16 group norm: 12 -> 120 us). Which ops go parallel is not
simply a matter of size: one ``round`` of a 1x3x32x32 image in a second thread was enough.
"""
from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

__all__ = ["Batcher", "QueueFull", "Job", "engine_thread"]


def engine_thread() -> ThreadPoolExecutor:
    """The one-thread executor that runs every torch op of a server (see the module
    docstring): load the model with it, then give it to :class:`Batcher`."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="d2c-engine")


class QueueFull(Exception):
    """More requests are waiting than the queue holds; retry after ``retry_after`` seconds."""

    def __init__(self, depth: int, retry_after: int = 1):
        super().__init__(f"the server is busy ({depth} requests waiting, the queue limit): "
                         f"retry in {retry_after} s")
        self.retry_after = retry_after


#: ``run(payloads) -> results``: one engine call for a group of requests with the same key,
#: one result per payload, in order.
GroupFn = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass
class Job:
    key: Hashable
    fn: GroupFn
    payload: Any
    size: int                        # images this request adds to a batch
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)
    abandoned: bool = False          # the client went away before the batch started


class Batcher:
    """Groups concurrent requests of the same key into one call (see the module docstring).

    ``on_batch(key, n_requests, n_images, seconds)``: called after each engine call (metrics).
    ``engine``: the one-thread executor the calls run in (:func:`engine_thread`; the caller
    keeps it, and should have loaded the model with it); without it the batcher makes its own
    at :meth:`start` and shuts it down at :meth:`stop`.
    Create and use it from one running event loop; :meth:`start` before the first
    :meth:`submit`, :meth:`stop` at shutdown."""

    def __init__(self, *, max_batch: int = 32, max_wait: float = 0.005, max_queue: int = 256,
                 on_batch: Callable[[Hashable, int, int, float], None] | None = None,
                 engine: ThreadPoolExecutor | None = None):
        if max_batch < 1 or max_queue < 1 or not max_wait >= 0:
            raise ValueError(f"max_batch and max_queue must be >= 1 and max_wait >= 0, got "
                             f"{max_batch}, {max_queue}, {max_wait}")
        self.max_batch, self.max_wait, self.max_queue = max_batch, float(max_wait), max_queue
        self.on_batch = on_batch
        self._waiting: list[Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._given = engine
        self._engine: ThreadPoolExecutor | None = None
        self.running = 0              # requests in the batch being computed
        self.arriving = 0             # requests being read and checked (see arrival())

    # ------------------------------------------------------------------ state
    @property
    def depth(self) -> int:
        """Requests waiting (not yet in a running batch)."""
        return len(self._waiting)

    def full(self) -> bool:
        return len(self._waiting) >= self.max_queue

    # ------------------------------------------------------------------ life
    def start(self) -> None:
        if self._task is None:
            self._engine = self._given or engine_thread()
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._consume())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for job in self._waiting:
            if not job.future.done():
                job.future.cancel()
        self._waiting.clear()
        if self._engine is not None:
            if self._engine is not self._given:
                self._engine.shutdown(wait=True)
            self._engine = None

    # ------------------------------------------------------------------ requests
    async def call(self, fn: Callable, *args):
        """``fn(*args)`` alone in the engine thread, after the calls already given to it
        (torch work outside a batch)."""
        if self._engine is None:
            raise RuntimeError("Batcher.start() was not called")
        return await asyncio.get_running_loop().run_in_executor(self._engine, fn, *args)

    @contextmanager
    def arrival(self):
        """Around the reading and checking of a request that will be submitted: while any
        request is arriving, a batch not yet full waits for it (at most ``max_wait``); when
        none is, a batch starts at once (a lone client never waits for company)."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1
            if self._wake is not None:
                self._wake.set()

    async def submit(self, key: Hashable, fn: GroupFn, payload: Any, size: int = 1):
        """Queue one request and wait for its result. ``QueueFull`` at once when the queue
        is full; an exception of the group's call is raised to every request in it."""
        if self._task is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.full():
            raise QueueFull(self.depth)
        job = Job(key, fn, payload, max(1, int(size)), asyncio.get_running_loop().create_future())
        self._waiting.append(job)
        self._wake.set()
        try:
            # shield: cancelling this request (client gone) must not cancel the shared batch
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            job.abandoned = True
            raise

    # ------------------------------------------------------------------ consumer
    def _take(self) -> list[Job]:
        """The oldest live request and the waiting ones with its key, up to max_batch images
        (a request larger than max_batch runs alone)."""
        self._waiting = [j for j in self._waiting if not j.abandoned]
        if not self._waiting:
            return []
        first = self._waiting[0]
        group, n = [first], first.size
        for j in self._waiting[1:]:
            if j.key == first.key and n + j.size <= self.max_batch:
                group.append(j)
                n += j.size
        return group

    def _group_size(self, key) -> int:
        return sum(j.size for j in self._waiting if j.key == key and not j.abandoned)

    async def _consume(self) -> None:
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            first = self._waiting[0]
            # wait for company while the batch is not full and requests are arriving, at
            # most max_wait after the first request of the group was queued
            deadline = first.queued_at + self.max_wait
            while (self._group_size(first.key) < self.max_batch and not first.abandoned
                   and self.arriving > 0 and time.perf_counter() < deadline):
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(),
                                           max(0.0, deadline - time.perf_counter()))
                except asyncio.TimeoutError:
                    break
            group = self._take()
            if not group:
                continue
            ids = {id(j) for j in group}
            self._waiting = [j for j in self._waiting if id(j) not in ids]
            await self._run(group)

    @staticmethod
    def _fail(job: Job, e: Exception) -> None:
        if not job.future.done():
            job.future.set_exception(e)
            if job.abandoned:
                job.future.exception()   # retrieved: nobody is waiting for it

    async def _run(self, group: list[Job]) -> None:
        self.running = len(group)
        t = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._engine, group[0].fn, [j.payload for j in group])
            if len(results) != len(group):
                raise RuntimeError(f"batch function returned {len(results)} results for "
                                   f"{len(group)} requests")
        except asyncio.CancelledError:
            raise
        except Exception as e:   # noqa: BLE001 - handed to the request(s) it belongs to
            if len(group) == 1:
                self._fail(group[0], e)
            else:   # one bad request must not fail the others: run each alone
                for j in group:
                    await self._run([j])
                return
        else:
            for j, r in zip(group, results):
                if not j.future.done():
                    j.future.set_result(r)
        finally:
            self.running = 0
            if self.on_batch is not None:
                self.on_batch(group[0].key, len(group), sum(j.size for j in group),
                              time.perf_counter() - t)
