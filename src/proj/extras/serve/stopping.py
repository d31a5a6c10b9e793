"""How the server stops: SIGTERM and Ctrl+C drain it, and it exits 0 with no traceback.

uvicorn's own shutdown does most of it: it stops accepting connections, closes the idle kept-alive ones and waits
for the requests in flight. Two things are added here:

- the drain is bounded: at SIGTERM the batcher is told (proj.extras.serve.batching.Batcher.drain), and whatever is
  not answered within --drain_seconds is answered 503; uvicorn's own limit (timeout_graceful_shutdown) is set a
  little later, as a backstop;
- the exit status: uvicorn raises the signal it caught again once it has stopped, so a SIGTERM'd server would end
  "killed by SIGTERM" (status 143) and a Ctrl+C'd one with a KeyboardInterrupt traceback. A drained server has
  done what was asked of it: status 0. A server that gave up (its model processes keep dying) ends with 1.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None]):
        super().__init__(config)
        self.on_drain, self.exit_status = on_drain, 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's handler of SIGTERM and SIGINT, without keeping the signal to raise again: a second Ctrl+C
        ends the drain at once, as in uvicorn."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
            return
        if not self.should_exit:
            self.on_drain()
        self.should_exit = True

    def give_up(self, why: str) -> None:
        """Stop serving with exit status 1 (called in the event loop)."""
        sys.stderr.write(f"proj serve: {why}; exit status 1\n")
        self.exit_status = 1
        self.handle_exit(signal.SIGTERM, None)


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere nothing), and end at once if
    the parent is already gone: a model process must not outlive a server killed with SIGKILL or by the OOM killer,
    holding memory and cores."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent or parent == 1:
        os._exit(0)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
