"""`python -m proj serve RUN_DIR_OR_EXPORT`: an HTTP server for a trained run (uvicorn + Starlette).

    python -m proj serve logs/default/version_0 [--port 8000] [--max_batch_size 16] [--workers 0]
    PROJ_SERVE_API_KEY=... python -m proj serve RUN --host 0.0.0.0 [--tls_cert cert.pem --tls_key key.pem]
    curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"inputs": [[[0, 3, 16, ...]]]}'

The model is the run's ONNX export (<run>/export/model.onnx, or the export folder given) when there is one, else
its best checkpoint with its config.yaml (--backend pytorch forces that). Either way the run's preprocessing is
inside the model (proj.models.deployable.Deployable). app.py holds the routes, batching.py the dynamic batching
and the drain, workers.py where the model runs, guard.py the API key and the model's identity, stopping.py how
SIGTERM ends it. uvicorn, starlette and onnxruntime are imported only when this command runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import socket
from pathlib import Path
from typing import Any, Literal

from proj.cli.parser import UsageError, run_function
from proj.cli.run_dir import best_checkpoint, is_run_dir

INSTALL = "pip install -e .[serve] -c constraints.txt"


def serve(
    target: Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    backend: Literal["auto", "onnx", "pytorch"] = "auto",
    ckpt_path: Path | None = None,
    max_batch_size: int = 16,
    batch_timeout: float = 0.005,
    workers: int = 0,
    max_samples: int = 256,
    max_body_bytes: int = 8 * 2**20,
    drain_seconds: float = 8.0,
    model_version: str | None = None,
) -> None:
    """Serve a run's model over HTTP: POST /predict, GET /health, /info and /metrics.

    Args:
        target: a run directory (logs/<name>/version_<n>) or an export folder (holding model.json).
        host: the address to listen on; any but loopback (e.g. 0.0.0.0 in a container) needs an API key.
        port: the TCP port.
        api_key_file: a file holding the API key clients must send (Authorization: Bearer KEY); or set it in the
            environment variable PROJ_SERVE_API_KEY. Never on the command line, where `ps` shows it.
        tls_cert: a PEM certificate (chain) to serve HTTPS with; give tls_key with it.
        tls_key: the certificate's PEM private key.
        backend: onnx (the export's model.onnx), pytorch (the run's checkpoint and config.yaml), or auto: onnx
            when the export exists.
        ckpt_path: the checkpoint for --backend pytorch (default: the run's best, else last.ckpt).
        max_batch_size: requests gathered into one model call (dynamic batching); 1 turns batching off.
        batch_timeout: seconds a request waits for others to join its batch when the server is idle.
        workers: 0 runs the model in the server's process (fastest); N runs N model processes, restarted when one
            dies (a crash in native code then fails one batch, not the server).
        max_samples: samples one request may carry; more is answered 413.
        max_body_bytes: bytes one request body may have; more is answered 413 before it is read.
        drain_seconds: at SIGTERM or Ctrl+C, how long requests in flight may take; later ones are answered 503
            (8: inside the 10 s `docker stop` waits before SIGKILL).
        model_version: the version this server reports (X-Model-Version, /info); default: the run's folder name.
    """
    check_options(host, port, max_batch_size, batch_timeout, workers, max_samples, max_body_bytes, drain_seconds)
    from proj.extras.serve.guard import api_key, identity, tls_files

    key, tls = api_key(api_key_file, host), tls_files(tls_cert, tls_key)
    check_port_free(host, port)  # before the model is loaded: not "serving on ..." and then "Address already in use"
    run_dir, export_dir = locate(Path(target))
    model, facts = load_backend(run_dir, export_dir, backend, ckpt_path, worker_threads(workers))
    shown = {k: v for k, v in facts.items() if k != "tokenizer_json"}  # a tokenizer's vocabulary: too long for /info
    info = {
        "model": {**shown, "backend": model.name, **run_card(export_dir, run_dir)},
        "identity": identity(model.file, run_dir, export_dir, model_version),
    }
    settings = dict(max_batch_size=max_batch_size, batch_timeout=batch_timeout, workers=workers,
                    max_samples=max_samples, max_body_bytes=max_body_bytes, drain_seconds=drain_seconds)  # fmt: skip
    from proj.extras.serve.server import Server  # uvicorn and starlette: only now

    server = Server(model, facts, info, settings, key, tls, host, port)
    status = server.run(f"{'https' if tls else 'http'}://{host}:{port} ({target})")
    if status:
        raise SystemExit(status)


def check_options(host: str, port: int, max_batch_size: int, batch_timeout: float, workers: int, max_samples: int,
                  max_body_bytes: int, drain_seconds: float) -> None:  # fmt: skip
    for name, value, least in (("port", port, 1024), ("max_batch_size", max_batch_size, 1), ("workers", workers, 0),
                               ("max_samples", max_samples, 1), ("max_body_bytes", max_body_bytes, 64)):  # fmt: skip
        if value < least:
            raise UsageError(f"--{name} {value} must be at least {least}")
    if port > 65535:
        raise UsageError(f"--port {port} is not a TCP port: give one from 1024 to 65535")
    if batch_timeout < 0 or drain_seconds < 0:
        raise UsageError(f"--batch_timeout {batch_timeout} and --drain_seconds {drain_seconds} must be >= 0")
    missing = [name for name in ("uvicorn", "starlette", "prometheus_client") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"serving needs {' and '.join(missing)}, not installed: {INSTALL}")


def worker_threads(workers: int) -> int:
    """CPU threads of the model (in the server's process: workers 0) or of each model process: the cores but the
    one the event loop needs to parse requests, shared equally. A thread more only fights the event loop for its
    core: fewer requests / s with batching on (benchmarks/serve.py's load, run with either count)."""
    return max(1, (usable_cores() - 1) // max(workers, 1))


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (docker --cpuset-cpus, taskset), and the cgroup's CPU quota
    (docker --cpus, Kubernetes' CPU limit) when there is one. os.cpu_count() counts the host's."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # cgroup v2: "max 100000" when unlimited
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    return cores


def locate(target: Path) -> tuple[Path | None, Path | None]:
    """(run directory, export folder) of what was given; either may be missing, not both."""
    if not target.exists():
        raise UsageError(f"{target} does not exist: give a run directory logs/<name>/version_<n> or its export/")
    if (target / "model.json").is_file():
        return (target.parent if is_run_dir(target.parent) else None), target
    if is_run_dir(target):
        return target, (target / "export" if (target / "export" / "model.json").is_file() else None)
    raise UsageError(
        f"{target} holds no model: neither a run directory (config.yaml and checkpoints/) nor an export folder "
        "(model.json, from `python -m proj export`)"
    )


def load_backend(
    run_dir: Path | None, export_dir: Path | None, backend: str, ckpt_path: Path | None, threads: int
) -> tuple[Any, dict[str, Any]]:
    onnx = export_dir / "model.onnx" if export_dir else None
    if backend == "onnx" or (backend == "auto" and onnx and onnx.is_file()):
        if not (onnx and onnx.is_file()):
            where = export_dir or (run_dir and run_dir / "export")
            raise UsageError(
                f"--backend onnx: {where} holds no model.onnx; export it first (python -m proj export --config "
                "<run>/config.yaml --ckpt_path <checkpoint> --format onnx) or use --backend pytorch"
            )
        if importlib.util.find_spec("onnxruntime") is None:
            raise UsageError("--backend onnx needs onnxruntime: pip install -e .[export] -c constraints.txt")
        from proj.extras.serve.backends import OnnxBackend

        facts = read_model_json(export_dir / "model.json")
        if "tokenizer" in facts.get("files", {}):  # a text model: its requests are tokenized with the run's tokenizer
            facts["tokenizer_json"] = (export_dir / facts["files"]["tokenizer"]).read_text()
        check_onnx_loads(onnx)
        return OnnxBackend(onnx, threads), facts
    if run_dir is None:
        raise UsageError(f"--backend pytorch needs the run directory (config.yaml, checkpoints/), not {export_dir}")
    return torch_backend(run_dir, ckpt_path or best_checkpoint(run_dir), threads)


def check_port_free(host: str, port: int) -> None:
    """Whether a server listens on the port already. SO_REUSEADDR, as uvicorn binds: the connections a stopped
    server leaves in TIME_WAIT do not stop a restart on its port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise UsageError(f"--host {host} is not an address of this machine: give e.g. 0.0.0.0") from None
        except OSError as err:
            raise UsageError(
                f"--port {port} on {host} cannot be used ({err.strerror}): stop what serves there, or give another "
                "--port (or --host)"
            ) from None


def read_model_json(path: Path) -> dict[str, Any]:
    """An export's facts, or a one-line refusal naming the file: the server would fail later in every worker."""
    try:
        facts = json.loads(path.read_text())
        for key in ("task", "input_shape"):
            facts[key]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path} cannot be read ({type(err).__name__}: {err}): export the run again") from None
    return facts


def check_onnx_loads(path: Path) -> None:
    """onnxruntime loads the export here once, so a corrupt file is one line now, not a traceback per worker."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail, ...)
        reason = " ".join(str(err).split())[:160]
        raise UsageError(f"{path} cannot be loaded by onnxruntime ({reason}): export the run again") from None


def torch_backend(run_dir: Path, ckpt: Path, threads: int) -> tuple[Any, dict[str, Any]]:
    """The checkpoint's model with the run's preprocessing inside (Deployable), built from the checkpoint alone:
    neither the training data nor the checkpoint an --init_from started from need to be where they were.
    Checkpoints written before the data's input facts were saved with them are built through config.yaml."""
    from proj.cli.checkpoints import data_state, model_of_checkpoint, read_checkpoint
    from proj.extras.serve.backends import TorchBackend
    from proj.models.deployable import Deployable, input_facts, model_facts

    if not Path(ckpt).is_file():
        raise UsageError(f"--ckpt_path {ckpt} does not exist")
    checkpoint = read_checkpoint(str(ckpt))
    data = data_state(checkpoint)
    if "input" not in data:
        return torch_backend_from_config(run_dir, ckpt, threads)
    model = model_of_checkpoint(checkpoint, str(ckpt))
    shape = list(model.hparams.input_shape)
    sequence = bool(data["input"].get("sequence"))
    module = Deployable(
        model.net, data["input"]["scale"], data.get("mean"), data.get("std"), len(shape) + 1, model.task,
        getattr(model, "target_mean", None), getattr(model, "target_std", None), sequence,
        bool(data["input"].get("text")),
    ).eval()  # fmt: skip
    facts = {
        "format": "pytorch",
        **model_facts(model),
        "features": list(data["input"].get("features", [])),
        **input_facts(data["input"], shape),
        "source_checkpoint": str(ckpt),
        **({"tokenizer_json": data["tokenizer"]} if "tokenizer" in data else {}),
    }
    return TorchBackend(module, threads, ckpt), facts


def torch_backend_from_config(run_dir: Path, ckpt: Path, threads: int) -> tuple[Any, dict[str, Any]]:
    """The checkpoint's Deployable, built from the run's config.yaml the way export builds it, and its facts."""
    from proj.cli.checkpoints import load_trained
    from proj.cli.run import lightning_main
    from proj.extras.serve.backends import TorchBackend
    from proj.models.deployable import deployable, input_facts, model_facts

    args = ["--config", str(run_dir / "config.yaml"), "--trainer.logger=false", "--init_from=null"]
    model, dm = load_trained(lightning_main(args, run=False), str(ckpt))
    facts = {
        "format": "pytorch",
        **model_facts(model),
        "features": list(getattr(dm, "features", None) or []),
        **input_facts(dm.stats["input"], dm.input_shape),
        "source_checkpoint": str(ckpt),
        **({"tokenizer_json": dm.stats["tokenizer"]} if "tokenizer" in dm.stats else {}),
    }
    return TorchBackend(deployable(model, dm), threads, ckpt), facts


def run_card(export_dir: Path | None, run_dir: Path | None) -> dict[str, Any]:
    """{"card": run.json's card} when the run (or its export) has a run record; older runs have none."""
    for folder in (export_dir, run_dir):
        record = folder / "run.json" if folder else None
        if record and record.is_file():
            card = json.loads(record.read_text()).get("card")
            return {"card": card} if card is not None else {}
    return {}


def command(name: str, args: list[str]) -> None:
    return run_function(name, serve, args)
