"""Serving throughput: `python -m proj serve` with dynamic batching on and off, ONNX and PyTorch backends, at
concurrency 1, 8 and 32, against a loop that calls the model directly, one sample at a time.

    python benchmarks/serve.py [--requests 320] [--repeats 3] [--nets smallcnn resnet110] [--backends onnx pytorch]

For each net (the default config's SmallCNN, and a ResNet-110 whose single-sample PyTorch call costs more than
a request's HTTP handling) a tiny digits run (one short epoch: the speed of a model does not depend on its
accuracy) is exported to ONNX and served on 127.0.0.1, one model worker per server. Each request carries one
8x8 image; clients are threads with a kept-alive connection each. Requests / s and p50 / p99 latency per case;
the number of requests per case is bounded (--requests, at least 10 per client). Goal: batching >= 3x the
unbatched server's requests / s at concurrency 32. Batching can only amortise the model's share of a request:
where the model call is cheaper than the HTTP handling, as SmallCNN's is, there is little to gain.
"""

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import result, table

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)
GOAL = 3.0
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


class Server:
    """`python -m proj serve` in a subprocess, waited for (bounded) and killed on exit."""

    def __init__(self, run_dir: Path, backend: str, max_batch_size: int):
        self.port = free_port()
        options = [f"--port={self.port}", f"--backend={backend}", f"--max_batch_size={max_batch_size}"]
        command = [sys.executable, "-m", "proj", "serve", str(run_dir), *options, "--batch_timeout=0.002"]
        self.process = subprocess.Popen(  # a session of its own, ended whole on exit: no orphaned LitServe workers
            command, cwd=run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )

    def __enter__(self) -> "Server":
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"the server stopped: {self.process.stderr.read().decode()[-3000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        sys.exit("the server did not become healthy within 120 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def load(port: int, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    """Send every body once from `concurrency` threads: (requests / s, latencies in ms)."""
    shares = [bodies[i::concurrency] for i in range(concurrency)]

    def client(share: list[bytes]) -> list[float]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        times = []
        for body in share:
            start = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                sys.exit(f"a request failed with {answer.status}")
            times.append(1000 * (time.perf_counter() - start))
        return times

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = [t for times in pool.map(client, shares) for t in times]
    return len(bodies) / (time.perf_counter() - start), latencies


def direct(model, images: np.ndarray) -> float:
    """Requests / s of a loop that calls the model in-process, one sample at a time (no HTTP, no batching)."""
    for x in images[:10]:
        model(x[None])  # warm-up
    start = time.perf_counter()
    for x in images:
        model(x[None])
    return len(images) / (time.perf_counter() - start)


def backend_of(run_dir: Path, backend: str):
    """The object the server's worker runs (proj.extras.serve.backends), built as `serve` builds it, loaded here."""
    from proj.cli.run_dir import best_checkpoint
    from proj.extras.serve.backends import OnnxBackend
    from proj.extras.serve.command import torch_backend, worker_threads

    threads = worker_threads(1)  # what the server's one worker gets
    if backend == "onnx":
        model = OnnxBackend(run_dir / "export" / "model.onnx", threads)
    else:
        model = torch_backend(run_dir, best_checkpoint(run_dir), threads)[0]
    model.load()
    return model


def measure(run_dir: Path, net: str, args: argparse.Namespace, images: np.ndarray) -> tuple[dict, dict]:
    """Requests / s and latencies of every case: the direct loops, then the servers with batching off and on,
    both started at once and loaded in turn (off, on, off, on...) so that a slow spell falls on both alike."""
    rates: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    for backend in args.backends:
        rates[f"{net} {backend} direct loop, batch 1"] = [direct(backend_of(run_dir, backend), images[: args.requests])]
        with contextlib.ExitStack() as stack:
            servers = {b: stack.enter_context(Server(run_dir, backend, size)) for b, size in (("off", 1), ("on", 32))}
            for concurrency in CONCURRENCY:
                count = max(args.requests, 10 * concurrency)
                bodies = [json.dumps({"inputs": [images[i % len(images)].tolist()]}).encode() for i in range(count)]
                for server in servers.values():
                    load(server.port, bodies[:concurrency], concurrency)  # warm-up: connections, first batches
                for _ in range(args.repeats):
                    for batching, server in servers.items():
                        name = f"{net} {backend} server, batching {batching}, concurrency {concurrency}"
                        rate, times = load(server.port, bodies, concurrency)
                        rates.setdefault(name, []).append(rate)
                        latencies.setdefault(name, []).extend(times)
    return rates, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=320, help="requests per case (bounded)")
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
    from proj.extras.serve.command import worker_threads

    print(
        f"{args.requests} requests per case (one 8x8 image each), one model worker of {worker_threads(1)} thread(s), "
        f"{os.cpu_count()} CPU cores"
    )
    print(table(rates, "requests/s", width=62, best=max))
    print()
    print(f"{'latency':<62}{'p50 ms':>10}{'p99 ms':>10}")
    for name, times in latencies.items():
        print(f"{name:<62}{statistics.median(times):>10.2f}{np.percentile(times, 99):>10.2f}")
    speedups = {
        case: statistics.median(rates[f"{case} server, batching on, concurrency 32"])
        / statistics.median(rates[f"{case} server, batching off, concurrency 32"])
        for case in (f"{net} {backend}" for net in args.nets for backend in args.backends)
    }
    result(
        "at concurrency 32, batching gives "
        + ", ".join(f"{case} {s:.2f}x" for case, s in speedups.items())
        + f" the unbatched server's requests/s (goal {GOAL:.0f}x: "
        + ", ".join(f"{case} {'met' if s >= GOAL else 'NOT met'}" for case, s in speedups.items())
        + ")"
    )


if __name__ == "__main__":
    main()
