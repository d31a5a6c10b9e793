"""Serving throughput: `python -m proj serve` with dynamic batching off and on, beside the smallest honest server
running the same model (benchmarks/minimal_server.py), ONNX and PyTorch backends, at concurrency 1, 8 and 32;
and a loop that calls the model directly, one sample at a time.

    python benchmarks/serve.py [--requests 320] [--repeats 3] [--nets smallcnn resnet110] [--backends onnx pytorch]

For each net (the default config's SmallCNN, and a ResNet-110 whose single-sample PyTorch call costs more than
a request's HTTP handling) a tiny digits run (one short epoch: the speed of a model does not depend on its
accuracy) is exported to ONNX. Per net and backend three servers on 127.0.0.1 are started at once: the minimal
server (uvicorn + Starlette, the model called in its process), proj serve with batching off (--max_batch_size 1)
and proj serve with its default settings (batching on); they are loaded in turn, every repeat
(common.interleave), so that a slow spell falls on all three alike. Each request carries one 8x8 image.

The load comes from one asyncio client in this process (uvloop), one kept-alive connection per concurrent client,
its HTTP/1.1 requests written and its answers read by hand: the client shares this 2-core machine's cores with
the server it loads, and this one spends about half the CPU per request that http.client threads did (110-190 us
against 370-430 us on smallcnn onnx at concurrency 32, busy machine; aiohttp spent 400-560 us), leaving more to
the server. Requests / s, p50 and p99 latency per case; each case sends --requests requests (at least one per
client). Goals at concurrency 32: batching >= 3x the unbatched server's requests / s for resnet110 pytorch
(batching can only amortise the model's share of a request: where the model call is cheaper than the HTTP
handling, as SmallCNN's is, there is little to gain), and proj serve with its defaults >= 0.8x the minimal
server's for smallcnn onnx (what its request checks, metrics and batching cost where the model is cheap).
"""

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import interleave, result, table
from minimal_server import backend_of, proj_serve_threads

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
BATCHING_GOAL = ("resnet110 pytorch", 3.0)
MINIMAL_GOAL = ("smallcnn onnx", 0.8)
WIDTH = 62
# The default net, whose call costs far less than a request's HTTP handling, and a deep one whose single-sample
# call in PyTorch costs more than it: batching can only amortise the model's share of a request.
NETS = {
    "smallcnn": [],
    "resnet110": ['--model.net={"class_path": "proj.nets.ResNet", "init_args": {"depth": 110}}'],
}
TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
MINIMAL, OFF, ON = "minimal server", "proj serve, batching off", "proj serve, batching on"


def train_and_export(workdir: Path, net: str) -> Path:
    from proj.cli import main as proj

    os.chdir(workdir)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is this benchmark's report
        config = ["--config", str(ROOT / "configs" / "default.yaml")]
        run = proj(["fit", *config, *NETS[net], *TINY, "--test_after_fit=false"])
        best = run.trainer.checkpoint_callback.best_model_path
        run_dir = Path(best).resolve().parent.parent
        proj(["export", "--config", str(run_dir / "config.yaml"), f"--ckpt_path={best}", "--format=onnx"])
    return run_dir


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_commands(run_dir: Path, backend: str, threads: int) -> dict[str, list[str]]:
    """The three servers of a net and backend; proj serve's other settings (workers, batch timeout) its defaults."""
    proj = [sys.executable, "-m", "proj", "serve", str(run_dir), f"--backend={backend}"]
    minimal = [sys.executable, str(ROOT / "benchmarks" / "minimal_server.py"), str(run_dir), f"--backend={backend}"]
    return {
        MINIMAL: [*minimal, f"--threads={threads}"],
        OFF: [*proj, "--max_batch_size=1"],
        ON: proj,
    }


class Server:
    """A server command in a subprocess of its own session, on a free port: started here, `wait`ed for (bounded),
    `stop`ped whole (no orphaned worker processes)."""

    def __init__(self, command: list[str], cwd: Path):
        self.port = free_port()
        # A file, not a pipe: nobody reads it while serving, and a full pipe would block the server. Closed by stop.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [*command, f"--port={self.port}"], cwd=cwd, stdout=self.log, stderr=self.log, start_new_session=True
        )

    def wait(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                sys.exit(f"the server stopped: {self.log.read().decode(errors='replace')[-3000:]}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            time.sleep(0.3)
        sys.exit(f"the server on port {self.port} did not become healthy in time")

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.log.close()


@contextlib.contextmanager
def started(commands: dict[str, list[str]], cwd: Path):
    """{name: Server}, every one started before any is waited for: they load their models side by side."""
    servers: dict[str, Server] = {}
    try:
        for name, command in commands.items():
            servers[name] = Server(command, cwd)
        deadline = time.monotonic() + 300  # three model loads at once on a busy 2-core machine
        for server in servers.values():
            server.wait(deadline)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


REQUEST = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


def load(port: int, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    """Send every body once over `concurrency` connections, each waiting for its answer before sending the next:
    (requests / s, latencies in ms). The connections are opened before the clock starts."""
    import uvloop

    return uvloop.run(load_async(port, bodies, concurrency))


async def load_async(port: int, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    connections = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)))
    latencies: list[float] = []
    start = time.perf_counter()
    shares = [bodies[i::concurrency] for i in range(concurrency)]
    await asyncio.gather(
        *(client(reader, writer, share, latencies) for (reader, writer), share in zip(connections, shares, strict=True))
    )
    rate = len(bodies) / (time.perf_counter() - start)
    for _, writer in connections:
        writer.close()
    return rate, latencies


async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, share: list[bytes], latencies: list):
    for body in share:
        start = time.perf_counter()
        writer.write(REQUEST % len(body) + body)
        async with asyncio.timeout(60):
            head = await reader.readuntil(b"\r\n\r\n")
            length = LENGTH.search(head)
            if length is None:  # chunked: neither server sends it for a JSON answer
                sys.exit(f"an answer without Content-Length: {head[:300]}")
            answer = await reader.readexactly(int(length[1]))
        if head.split(b" ", 2)[1] != b"200":
            sys.exit(f"a request failed: {head.splitlines()[0].decode()} {answer[:300].decode(errors='replace')}")
        latencies.append(1000 * (time.perf_counter() - start))


def direct(model, images: np.ndarray) -> tuple[float, list[float]]:
    """Requests / s and per-call ms of a loop that calls the model in-process, one sample at a time."""
    for x in images[:10]:
        model(x[None])  # warm-up
    latencies = []
    start = time.perf_counter()
    for x in images:
        call = time.perf_counter()
        model(x[None])
        latencies.append(1000 * (time.perf_counter() - call))
    return len(images) / (time.perf_counter() - start), latencies


def measure(run_dir: Path, net: str, args: argparse.Namespace, images: np.ndarray) -> tuple[dict, dict]:
    """Requests / s and latencies of every case: the direct loop, then the three servers, started at once and
    loaded in turn at each concurrency."""
    rates: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    threads = proj_serve_threads()
    for backend in args.backends:
        loop = f"{net} {backend} direct loop, batch 1"
        rate, latencies[loop] = direct(backend_of(run_dir, backend, threads), images[: args.requests])
        rates[loop] = [rate]
        with started(server_commands(run_dir, backend, threads), run_dir) as servers:
            for concurrency in CONCURRENCY:
                count = max(args.requests, concurrency)
                bodies = [json.dumps({"inputs": [images[i % len(images)].tolist()]}).encode() for i in range(count)]
                cases = {}
                for kind, server in servers.items():
                    name = f"{net} {backend} {kind}, concurrency {concurrency}"
                    cases[name] = loader(server.port, bodies, concurrency, latencies.setdefault(name, []))
                    if args.repeats > 1:  # warm-up: first batches; a lone repeat measures nothing it could steady
                        load(server.port, bodies[:concurrency], concurrency)
                rates |= interleave(cases, args.repeats)
    return rates, latencies


def loader(port: int, bodies: list[bytes], concurrency: int, latencies: list[float]):
    """A case for common.interleave: one load, its requests / s returned and its latencies kept."""

    def run() -> float:
        rate, times = load(port, bodies, concurrency)
        latencies.extend(times)
        return rate

    return run


def ratios(rates: dict, cases: list[str], kind: str, baseline: str) -> dict[str, float]:
    """At concurrency 32, per case: the median requests / s of `kind` over `baseline`'s."""
    return {
        case: statistics.median(rates[f"{case} {kind}, concurrency 32"])
        / statistics.median(rates[f"{case} {baseline}, concurrency 32"])
        for case in cases
    }


def headline(ratios: dict[str, float], goal: tuple[str, float]) -> str:
    case, least = goal
    shown = ", ".join(f"{c} {r:.2f}x" for c, r in ratios.items())
    verdict = "not run" if case not in ratios else "met" if ratios[case] >= least else "NOT met"
    return f"{shown} (goal >= {least:g}x for {case}: {verdict})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per case (at least one per client)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["onnx", "pytorch"], choices=["onnx", "pytorch"])
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32)[:, None]
    rates: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    for net in args.nets:
        workdir = Path(tempfile.mkdtemp(prefix="serve_bench_"))
        try:
            net_rates, net_latencies = measure(train_and_export(workdir, net), net, args, images)
        finally:
            os.chdir(ROOT)
            shutil.rmtree(workdir, ignore_errors=True)
        rates |= net_rates
        latencies |= net_latencies
    print(
        f"{args.requests} requests per case (at least one per client; one 8x8 image each), a model of "
        f"{proj_serve_threads()} thread(s) in every server, {os.cpu_count()} CPU cores; load from one asyncio client"
    )
    header, *lines = table(rates, "requests/s", width=WIDTH, best=max).split("\n")
    print(f"{header}{'p50 ms':>10}{'p99 ms':>10}")
    for line, name in zip(lines, rates, strict=True):  # table's lines are in the order of rates
        print(f"{line}{statistics.median(latencies[name]):>10.2f}{np.percentile(latencies[name], 99):>10.2f}")
    cases = [f"{net} {backend}" for net in args.nets for backend in args.backends]
    batching = ratios(rates, cases, ON, OFF)
    result(f"requests/s at concurrency 32, batching on / off: {headline(batching, BATCHING_GOAL)}")
    versus = ratios(rates, cases, ON, MINIMAL)
    result(
        f"requests/s at concurrency 32, proj serve (defaults) / minimal server: {headline(versus, MINIMAL_GOAL)}",
        row="Serving: proj serve against a minimal uvicorn + Starlette server, same model",
    )


if __name__ == "__main__":
    main()
