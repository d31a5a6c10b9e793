"""How the server's processes stop: Ctrl+C and SIGTERM end every one of them, without a traceback, whatever order
they end in.

LitServe runs a manager, a logger, the model workers and the HTTP server each in a process of its own. Left as
they are, a terminal's Ctrl+C reaches all of them at once and each prints its KeyboardInterrupt traceback; and
LitServe's monitor thread asks the manager every 2 seconds whether to stop, which raises ("Monitoring worker
crashed") when the shutdown has already stopped the manager (seen on a busy machine, where the shutdown is slow).
So here:

- the processes are started with SIGINT ignored, which they inherit; this process alone handles Ctrl+C, from the
  moment they have all started (a Ctrl+C during start-up is ignored; SIGTERM works throughout);
- Ctrl+C and SIGTERM take the same path: LitServe's logger process, which it does not stop itself, is ended
  first (it would fail reading its queue once the manager is gone), then LitServe's own shutdown runs: the HTTP
  server finishes the requests in flight, then the workers and the manager end;
- a thread of this module watches the model workers in place of LitServe's monitor: it never asks the manager, and
  a worker that dies stops the server with one line saying so;
- every process of the server ends with this one, even when this one is killed outright (SIGKILL, the OOM killer):
  each is told by the kernel when its parent dies (Linux's PR_SET_PDEATHSIG), set in the forked ones (the HTTP
  server, the manager) as they fork and in the spawned model workers as they start. Else they went on answering
  on the port, re-parented to init, and a restart failed with "Address already in use".

LitServe has no public hook between starting its processes and waiting for the end: `_start_worker_monitoring`
(litserve 0.2.19, constraints.txt) is overridden, the one private member this module touches.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

import litserve as ls

STOPPING = threading.Event()
MAIN_PID = os.getpid()
WATCH_EVERY_S = 1.0


class QuietlyStoppedServer(ls.LitServer):
    def _start_worker_monitoring(self, manager: Any, uvicorn_workers: dict) -> None:
        """Called by LitServer.run once every process has started (they inherited SIGINT ignored): from now on
        Ctrl+C is this process's to handle, and the workers are watched by `watch_workers`."""
        signal.signal(signal.SIGINT, stop_server)
        threading.Thread(target=watch_workers, args=(self.inference_workers,), daemon=True, name="watch").start()


def stop_server(signum: int, frame: Any) -> None:
    """The handler of SIGTERM and SIGINT: LitServe's shutdown starts from a KeyboardInterrupt in its run loop."""
    if os.getpid() != MAIN_PID:  # a forked HTTP process that inherited the handler: uvicorn has stopped it
        raise SystemExit(0)
    if STOPPING.is_set():  # a second signal while the first one's shutdown runs
        return
    STOPPING.set()
    for child in multiprocessing.active_children():
        if child.name.startswith("SpawnProcess"):  # LitServe's logger process, which its shutdown leaves running
            child.terminate()
    raise KeyboardInterrupt


def watch_workers(workers: list[Any]) -> None:
    while not STOPPING.wait(WATCH_EVERY_S):
        dead = [w for w in workers if not w.is_alive()]
        if dead:
            sys.stderr.write(f"a model worker ended (exit code {dead[0].exitcode}): stopping the server\n")
            os.kill(MAIN_PID, signal.SIGTERM)
            return


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere nothing), and end at once if
    the parent is already gone (re-parented: a kill between the fork and this call)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent or parent == 1:
        os._exit(0)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def serve_until_stopped(server: QuietlyStoppedServer, port: int) -> None:
    os.register_at_fork(after_in_child=die_with_parent)  # the HTTP server and LitServe's manager are forked
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by every process LitServe starts
    signal.signal(signal.SIGTERM, stop_server)
    try:
        server.run(host="127.0.0.1", port=port, generate_client_file=False, num_api_servers=1, log_level="warning")
    except KeyboardInterrupt:
        pass  # stopped during start-up: LitServe's own shutdown did not run
    finally:
        STOPPING.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in multiprocessing.active_children():  # what LitServe's shutdown did not end (or never started)
            child.terminate()
            child.join(5)
            if child.is_alive():
                child.kill()
