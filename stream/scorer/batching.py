"""Micro-batching of concurrent requests into one forward pass, with a bounded wait.

The first request of a batch waits at most `max_wait_s` for others (up to `max_batch`); the batch then
runs on a single worker thread (torch and the sync Cassandra driver never block the event loop) while
the next batch gathers. Under load batches form by themselves without waiting: requests that arrive
while one batch computes are all taken together by the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class MicroBatcher(Generic[Req, Resp]):
    """`await submit(x)` -> the answer for x from `process(batch)` (a list of answers in batch order)."""

    def __init__(self, process: Callable[[list[Req]], list[Resp]], *, max_batch: int, max_wait_s: float):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.process, self.max_batch, self.max_wait_s = process, max_batch, max_wait_s
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future[Resp]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer-batch")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True)

    async def submit(self, item: Req) -> Resp:
        if self._queue is None:
            raise RuntimeError("batcher not started")
        future: asyncio.Future[Resp] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def _gather(self) -> list[tuple[Req, asyncio.Future[Resp]]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            live = [(x, f) for x, f in batch if not f.done()]  # a caller that went away needs no answer
            if not live:
                continue
            try:
                answers = await loop.run_in_executor(self._executor, self.process, [x for x, _ in live])
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
                for _, f in live:
                    if not f.done():
                        f.set_exception(exc)
                continue
            for (_, f), answer in zip(live, answers):  # an exception answers its own caller only
                if not f.done():
                    if isinstance(answer, BaseException):
                        f.set_exception(answer)
                    else:
                        f.set_result(answer)
