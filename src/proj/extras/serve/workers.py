"""Where the model runs: a thread of the server's own process (--workers 0, the default), or model processes.

In the server's process a batch costs no copy and no message: the event loop parses requests while the model
thread computes (ONNX Runtime and PyTorch release the GIL), and on a few cores this serves the most requests / s
(benchmarks/serve.py). Model processes (--workers N) cost a pickled batch each way, and isolate the server from
a model that crashes its process: a model process that dies (a segfault in a native library, the OOM killer,
kill -9) fails only the batch it ran (503), /health says so until the processes are started again, and they are:
the server restarts them, and stops with exit status 1 when they die 3 times within a minute (a model that
cannot run: left to whatever restarts the server, which would only loop here).

Both are concurrent.futures executors, so the batcher (proj.extras.serve.batching) sees one interface: `run`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from proj.extras.serve.stopping import die_with_parent

DEATHS_TO_GIVE_UP = 3
WITHIN_S = 60.0
HEALTH_PING_S = 5.0


class WorkerDied(Exception):
    """A model process died while it held this batch, or the model processes are being started again."""


class InProcess:
    """The model in one thread of this process: batches run one at a time, beside the event loop."""

    size = 1

    def __init__(self, backend: Any):
        self.backend = backend
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="model")

    def start(self) -> None:
        self.pool.submit(self.backend.load).result()

    async def run(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.backend, x)

    async def problem(self) -> str | None:
        return None  # it shares the server's fate: if the model crashes this process, nothing is left to answer

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Processes:
    """`size` model processes (spawned: a fork of a process running threads can deadlock), each with its own copy
    of the backend, loaded once; started again when one dies."""

    def __init__(self, backend: Any, size: int, give_up: Callable[[str], None]):
        self.backend, self.size, self.give_up = backend, size, give_up
        self.deaths: deque[float] = deque(maxlen=DEATHS_TO_GIVE_UP)
        self.restarting: asyncio.Task | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(self.size, context, initializer=load_in_worker, initargs=(self.backend,))
        warm = [self.pool.submit(time.sleep, 0.05) for _ in range(self.size)]  # each call starts one process
        for started in warm:
            started.result()  # a model that cannot load fails here, before the server says it serves

    async def run(self, x: np.ndarray | list[np.ndarray]) -> np.ndarray:
        if self.restarting:
            raise WorkerDied("a model process died: the model processes are being started again")
        pool = self.pool
        try:
            return await asyncio.wrap_future(pool.submit(predict_in_worker, x))
        except BrokenProcessPool:
            self.died(pool)
            raise WorkerDied("a model process died while it computed this request: send it again") from None

    async def problem(self) -> str | None:
        """Why the model processes cannot answer now (GET /health), or None: a ping through the pool."""
        if self.restarting:
            return "a model process died: starting the model processes again"
        pool = self.pool
        try:
            await asyncio.wait_for(asyncio.wrap_future(pool.submit(os.getpid)), HEALTH_PING_S)
        except BrokenProcessPool:
            self.died(pool)
            return "a model process died: starting the model processes again"
        except TimeoutError:
            pass  # every process is busy with a batch: alive
        return None

    def died(self, pool: ProcessPoolExecutor) -> None:
        """Once per broken pool: say so, and start the processes again (or give up: DEATHS_TO_GIVE_UP)."""
        if pool is not self.pool or self.restarting:
            return
        now = time.monotonic()
        self.deaths.append(now)
        if len(self.deaths) == DEATHS_TO_GIVE_UP and now - self.deaths[0] < WITHIN_S:
            self.give_up(f"model processes died {DEATHS_TO_GIVE_UP} times within {WITHIN_S:.0f} s: stopping")
            return
        sys.stderr.write("proj serve: a model process died (killed, or crashed in native code): restarting them\n")
        self.restarting = asyncio.get_running_loop().create_task(self.restart(pool))

    async def restart(self, broken: ProcessPoolExecutor) -> None:
        broken.shutdown(wait=False, cancel_futures=True)
        try:
            await asyncio.to_thread(self.start)
            sys.stderr.write(f"proj serve: {self.size} model process(es) started again\n")
        except Exception as err:  # the model no longer loads (a file deleted under the server)
            self.give_up(f"the model processes could not be started again ({type(err).__name__}: {err})")
        finally:
            self.restarting = None

    def stop(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


BACKEND: Any = None  # the backend of this model process, loaded by load_in_worker


def load_in_worker(backend: Any) -> None:
    """A model process's start: it ends with the server (even a killed one), Ctrl+C is the server's to handle
    (a terminal sends it to every process of the group), and the model is loaded once."""
    global BACKEND
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    BACKEND = backend
    BACKEND.load()


def predict_in_worker(x: np.ndarray | list[np.ndarray]) -> np.ndarray:
    return BACKEND(x)


def model_workers(backend: Any, processes: int, give_up: Callable[[str], None]) -> InProcess | Processes:
    return InProcess(backend) if processes == 0 else Processes(backend, processes, give_up)
