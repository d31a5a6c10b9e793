"""Dynamic batching in the server's own event loop, and the drain that ends it.

A request's samples wait in a queue. Whenever a model worker is free, the requests waiting go to it as one model
call, with those that come within batch_timeout of the first, up to max_batch_size requests: under load batches
also grow while the worker is busy with the previous one. Every request is answered: its
predictions, or `Refused` (503) when the server is shutting down or a model worker died under it.

The drain: once SIGTERM (or Ctrl+C) arrives, no request is queued any more and the waiting ones no longer wait for
a batch to fill; whatever is not answered within the drain time is refused with 503, so a client is never left
without an answer and the server ends in bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from proj.extras.serve.workers import WorkerDied


class Refused(Exception):
    """A request the server cannot answer now, though it is well formed: 503, to be sent again later."""


@dataclass(eq=False)
class Waiting:
    x: np.ndarray | list[np.ndarray]  # the request's samples (sequences and texts: a list of arrays)
    answer: asyncio.Future


class Batcher:
    def __init__(self, workers: Any, metrics: Any, max_batch_size: int = 16, batch_timeout: float = 0.005):
        self.workers, self.metrics = workers, metrics
        self.max_batch_size, self.batch_timeout = max_batch_size, batch_timeout
        self.unanswered: set[Waiting] = set()
        self.draining = False

    async def run(self) -> None:
        """The batching loop, a task of the server's event loop for as long as it serves."""
        self.loop, self.queue = asyncio.get_running_loop(), asyncio.Queue()
        self.free = asyncio.Semaphore(self.workers.size)  # a batch is gathered only once a worker can take it
        self.arrived = asyncio.Event()  # set by each request queued, and by the drain
        self.calls: set[asyncio.Task] = set()
        while True:
            await self.free.acquire()
            call = asyncio.create_task(self.call(await self.gather()))
            self.calls.add(call)  # a reference, or the task could be collected while it runs
            call.add_done_callback(self.calls.discard)

    async def gather(self) -> list[Waiting]:
        """The next batch: the requests waiting, and those that come within batch_timeout of the first, up to
        max_batch_size (at once when it is full, or when the drain has begun)."""
        batch = [await self.queue.get()]
        deadline = self.loop.time() + self.batch_timeout
        while True:
            while len(batch) < self.max_batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            left = deadline - self.loop.time()
            if len(batch) >= self.max_batch_size or self.draining or left <= 0:
                return batch
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)

    async def predict(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """The model's outputs for one request's samples, computed in a batch with the requests waiting beside it."""
        if self.draining:
            raise Refused("the server is shutting down")
        waiting = Waiting(x, self.loop.create_future())
        self.unanswered.add(waiting)
        self.queue.put_nowait(waiting)
        self.arrived.set()
        try:
            return await waiting.answer
        finally:
            self.unanswered.discard(waiting)

    async def call(self, batch: list[Waiting]) -> None:
        batch = [w for w in batch if not w.answer.done()]  # refused by the drain's deadline while they waited
        try:
            if batch:
                start = time.perf_counter()
                outputs = await self.workers.run(join([w.x for w in batch]))
                self.metrics.model_call(time.perf_counter() - start, sum(len(w.x) for w in batch))
                for waiting, y in zip(batch, split(outputs, [len(w.x) for w in batch]), strict=True):
                    answer(waiting, result=y)
        except WorkerDied as err:
            for waiting in batch:
                answer(waiting, error=Refused(str(err)))
        except Exception as err:  # the model failed on this batch: its requests get a 500 naming the error
            for waiting in batch:
                answer(waiting, error=err)
        finally:
            self.free.release()

    def drain_soon(self, seconds: float) -> None:
        """The drain, from a signal handler: run in the event loop (or, before the loop runs, no request queued)."""
        self.draining = True
        if hasattr(self, "loop"):
            self.loop.call_soon_threadsafe(self.drain, seconds)

    def drain(self, seconds: float) -> None:
        """From SIGTERM on (called in the event loop): queue nothing new, stop waiting for batches to fill, and
        refuse what is still unanswered `seconds` from now."""
        self.draining = True
        self.arrived.set()
        self.loop.call_later(seconds, self.refuse_unanswered)

    def refuse_unanswered(self) -> None:
        for waiting in list(self.unanswered):
            answer(waiting, error=Refused("the server is shutting down: not answered within the drain time"))


def answer(waiting: Waiting, result: Any = None, error: BaseException | None = None) -> None:
    if waiting.answer.done():  # refused at the drain's deadline while its batch ran
        return
    if error is not None:
        waiting.answer.set_exception(error)
    else:
        waiting.answer.set_result(result)


def join(inputs: list[np.ndarray | list[np.ndarray]]) -> np.ndarray | list[np.ndarray]:
    """Several requests' samples as one batch: one array, or one list of sequences (padded by the backend)."""
    if len(inputs) == 1:
        return inputs[0]
    if isinstance(inputs[0], np.ndarray):
        return np.concatenate(inputs)
    return [sample for x in inputs for sample in x]


def split(outputs: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(outputs, np.cumsum(sizes)[:-1])
