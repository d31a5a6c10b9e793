"""The LitServe side: the LitAPI that batches requests into one model call, the request check in front of the
worker queue, and /metrics.

LitServe decodes the requests of a batch one by one inside its worker and answers every request of the batch
with the first error raised: one malformed request would fail the others. So `CheckRequests`, an ASGI middleware
in the HTTP process, parses and checks each request (proj.extras.serve.requests) and answers a bad one at once with
4xx `{"error": ..., "field": ...}`; only good requests reach the queue. It also refuses a body that is not
JSON, which LitServe would answer with a 500.

Metrics are LitServe's: the worker `log`s each model call (seconds, samples) into LitServe's logger queue, and a
`litserve.Logger` in LitServe's logger process feeds Prometheus histograms. The processes share them through
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by command.py before this is imported),
read by GET /metrics in the HTTP process together with the counts of accepted and refused requests.
"""

from __future__ import annotations

import json
import time
import warnings
from typing import Any, NamedTuple

import litserve as ls
import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from starlette.responses import JSONResponse, Response

from proj.extras.serve.backends import outputs_to_json
from proj.extras.serve.requests import BadRequest, InputSpec
from proj.extras.serve.stopping import QuietlyStoppedServer, die_with_parent

MAX_BODY_BYTES = 32 * 2**20
PREDICT_PATH = "/predict"
REQUESTS = Counter("proj_serve_requests", "Requests to /predict by outcome", ["outcome"])


class Batch(NamedTuple):
    """The samples of several requests in one array, and how many each request brought."""

    x: np.ndarray
    sizes: list[int]


class ModelAPI(ls.LitAPI):
    def __init__(self, backend: Any, facts: dict[str, Any], spec: InputSpec, max_batch_size: int, batch_timeout: float):
        with warnings.catch_warnings():  # batch/unbatch unused at max_batch_size 1: predict takes either form
            warnings.filterwarnings("ignore", message=".*batch and unbatch methods implemented.*")
            super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=PREDICT_PATH)
        self.backend, self.facts, self.input_spec = backend, facts, spec

    def setup(self, device: str) -> None:
        die_with_parent()  # a spawned model worker: it ends with the server's main process (stopping.py)
        self.backend.load()

    def decode_request(self, request, context) -> np.ndarray:  # unannotated: LitServe hands over the parsed JSON
        context["field"] = next((k for k in ("rows", "texts") if isinstance(request, dict) and k in request), "inputs")
        try:
            return self.input_spec.decode(request)  # checked already in the HTTP process: this cannot fail there
        except BadRequest as err:
            from fastapi import HTTPException

            raise HTTPException(err.status, detail=err.body()) from None

    def batch(self, inputs: list[np.ndarray]) -> Batch:
        samples = np.concatenate(inputs) if isinstance(inputs[0], np.ndarray) else [s for x in inputs for s in x]
        return Batch(samples, [len(x) for x in inputs])  # sequences: a list, padded by the backend

    def predict(self, x: np.ndarray | Batch) -> np.ndarray | Batch:
        start = time.perf_counter()
        inputs = x.x if isinstance(x, Batch) else x
        out = self.backend(inputs)
        self.log("predict", (time.perf_counter() - start, len(inputs)))  # one message to the logger per batch
        return Batch(out, x.sizes) if isinstance(x, Batch) else out

    def unbatch(self, output: Batch) -> list[np.ndarray]:
        return np.split(output.x, np.cumsum(output.sizes)[:-1])

    def encode_response(self, output: np.ndarray, context):  # unannotated: LitServe makes a return type its schema
        """The request's predictions; 422 when the model's output is not finite (an input far outside anything it
        was trained on overflows inside it): never a 200 with null. A response, not an exception: an exception
        here would fail every request of the batch."""
        bad = [i for i, row in enumerate(output) if not np.isfinite(row).all()]
        if bad:
            error = BadRequest(
                f"{context.get('field', 'inputs')}[{bad[0]}]",
                "the model's output for it is not finite: its values lie far outside the training data's (check "
                "their units and scale)",
            )
            return JSONResponse(error.body(), status_code=422)
        return {"predictions": outputs_to_json(self.facts, output)}


class PrometheusLogger(ls.Logger):
    """Runs in LitServe's logger process: the worker's ("predict", (seconds, samples)) into histograms."""

    def process(self, key: str, value: Any) -> None:
        if key != "predict":
            return
        if not hasattr(self, "seconds"):  # made here, in the logger process, where the values are written
            self.seconds = Histogram("proj_serve_predict_seconds", "Model time per call (one batch)")
            buckets = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, float("inf"))
            self.samples = Histogram("proj_serve_batch_samples", "Samples per model call", buckets=buckets)
        self.seconds.observe(value[0])
        self.samples.observe(value[1])


class CheckRequests:
    """ASGI middleware on POST /predict: a request that is not JSON, or that the model cannot take, is answered
    here with 4xx naming the field; a good one goes on with its body replayed."""

    def __init__(self, app: Any, spec: InputSpec, path: str = PREDICT_PATH):
        self.app, self.spec, self.path = app, spec, path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:
                too_large = BadRequest("body", f"larger than {MAX_BODY_BYTES >> 20} MiB", 413)
                return await refuse(too_large, scope, receive, send)
        try:
            self.spec.decode(parse_json(body))
        except BadRequest as err:
            return await refuse(err, scope, receive, send)
        REQUESTS.labels("accepted").inc()
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def refuse(err: BadRequest, scope: dict, receive: Any, send: Any) -> None:
    REQUESTS.labels(f"refused_{err.status}").inc()
    await JSONResponse(err.body(), status_code=err.status)(scope, receive, send)


def parse_json(body: bytes) -> Any:
    """The request's JSON, or a 400 naming why not: not JSON, nested deeper than Python's parser recurses, or a
    number with more digits than Python converts (4300: its guard against quadratic-time parsing)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise BadRequest("body", 'JSON nested too deep; expected {"inputs": [...]} or {"rows": [...]}', 400) from None
    except (UnicodeDecodeError, ValueError) as err:  # json.JSONDecodeError and a 5000-digit integer are ValueErrors
        raise BadRequest(
            "body", f"not JSON that can be read ({str(err)[:120]}); send Content-Type: application/json", 400
        ) from None


def build_server(
    backend: Any,
    facts: dict[str, Any],
    info: dict[str, Any],
    max_samples: int,
    max_batch_size: int,
    batch_timeout: float,
    workers: int,
) -> QuietlyStoppedServer:
    spec = InputSpec.from_facts(facts, max_samples)
    api = ModelAPI(backend, facts, spec, max_batch_size, batch_timeout)
    server = QuietlyStoppedServer(
        api,
        accelerator="cpu",
        workers_per_device=workers,
        model_metadata=info,  # GET /info: {"model": these facts, "server": LitServe's settings}
        middlewares=[(CheckRequests, {"spec": spec})],
        loggers=PrometheusLogger(),
        disable_openapi_url=True,
    )

    @server.app.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return server
