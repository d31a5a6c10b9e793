"""The smallest honest HTTP server for a run's model, the floor `python -m proj serve` is measured against by
benchmarks/serve.py: uvicorn + Starlette in one process, POST /predict and GET /health, on 127.0.0.1.

    python benchmarks/minimal_server.py RUN_DIR --port 8000 [--backend onnx|pytorch] [--threads N]

/predict does only what any server must: json.loads -> np.asarray(float32) -> the model -> the same JSON answer as
proj serve's (proj.extras.serve.backends.outputs_to_json with the export's model.json facts). The model is the very
object proj serve runs (OnnxBackend, or the checkpoint's TorchBackend), built by `backend_of` with the thread count
proj serve gives its model (unless --threads says otherwise). No validation, no batching, no metrics, no error
answers: a bad request is a 500.
"""

import argparse
import json
from pathlib import Path

import numpy as np


def backend_of(run_dir: Path, backend: str, threads: int):
    """The object proj serve's model runs (proj.extras.serve.backends), built as `serve` builds it, loaded here.
    proj's CLI (Lightning) is imported for the PyTorch backend only: serve.py's smoke test starts this server beside
    two others on 2 cores, and the import is most of an ONNX server's start-up CPU."""
    from proj.extras.serve.backends import OnnxBackend

    if backend == "onnx":
        model = OnnxBackend(run_dir / "export" / "model.onnx", threads)
    else:
        from proj.cli.run_dir import best_checkpoint
        from proj.extras.serve.command import torch_backend

        model = torch_backend(run_dir, best_checkpoint(run_dir), threads)[0]
    model.load()
    return model


def proj_serve_threads() -> int:
    """The thread count proj serve gives its model in its process (--workers 0, its default)."""
    from proj.extras.serve.command import worker_threads

    return worker_threads(0)


def app_of(model, facts: dict):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from proj.extras.serve.backends import outputs_to_json

    # The model is called on the event loop, not in Starlette's thread pool (run_in_threadpool, what a sync FastAPI
    # endpoint gets). Tried both, two servers side by side loaded in turn at concurrency 32 (busy 2-core machine):
    # - smallcnn onnx, whose call is cheaper than the request's HTTP handling: the loop served more in each of 3
    #   pairs (1130-2070 against 370-1300 requests / s) at 1.4-2x less server CPU a request: the pool only adds a
    #   hand-over to a thread and back per request;
    # - resnet110 pytorch (a ~20 ms call): the pool served more (32-47 against 19-23 requests / s), but only by
    #   running two calls at once on the two cores, twice the model threads proj serve's model gets; blocking the
    #   loop there also left some connections waiting (p99 9-13 s against 1.2-1.9 s).
    # So the loop: the fastest where the server's own cost shows, and the same model threads as proj serve's.
    async def predict(request):
        x = np.asarray(json.loads(await request.body())["inputs"], dtype=np.float32)
        return JSONResponse({"predictions": outputs_to_json(facts, model(x))})

    async def health(request):
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory with its ONNX export (export/model.json)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", choices=["onnx", "pytorch"], default="onnx")
    parser.add_argument("--threads", type=int, help="the model's CPU threads (default: what proj serve gives it)")
    args = parser.parse_args()
    import uvicorn

    facts = json.loads((args.run_dir / "export" / "model.json").read_text())
    app = app_of(backend_of(args.run_dir, args.backend, args.threads or proj_serve_threads()), facts)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
