"""The HTTP side: a Starlette app, served by uvicorn in one process, with the model beside it
(proj.extras.serve.workers) and requests batched in its event loop (proj.extras.serve.batching).

    POST /predict   {"inputs": [...]} / {"rows": [...]} / {"texts": [...]} -> {"predictions": [...]}
    GET  /health    200 "ok", or 503 naming why not (starting, draining, a model process died)
    GET  /info      {"model": model.json's facts, the backend, the run card; "identity": run, version, sha256;
                     "server": the serving settings}
    GET  /metrics   Prometheus

Each request is read, parsed and checked here, in the event loop, before it joins a batch: one bad request is a
4xx naming its field (proj.extras.serve.requests) and never fails the requests batched with it. A body longer
than --max_body_bytes is refused with 413 from its Content-Length alone, or as soon as that many bytes have
arrived, never read in full.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from proj.extras.serve.backends import outputs_to_json
from proj.extras.serve.batching import Batcher, Refused
from proj.extras.serve.guard import Guard
from proj.extras.serve.metrics import Metrics
from proj.extras.serve.requests import BadRequest, InputSpec


class ModelService:
    """What the routes share: the input check, the batcher and its workers, the metrics, the facts."""

    def __init__(self, workers: Any, facts: dict[str, Any], info: dict[str, Any], settings: dict[str, Any]):
        self.workers, self.facts, self.info, self.settings = workers, facts, info, settings
        self.spec = InputSpec.from_facts(facts, settings["max_samples"])
        self.metrics = Metrics(info["identity"])
        self.batcher = Batcher(workers, self.metrics, settings["max_batch_size"], settings["batch_timeout"])

    async def predict(self, request: Request) -> Response:
        start = time.perf_counter()
        with self.metrics.in_flight.track_inprogress():
            response = await self.answer(request)
        self.metrics.request(response.status_code, time.perf_counter() - start)
        return response

    async def answer(self, request: Request) -> Response:
        field = "inputs"
        try:
            payload = parse_json(await read_body(request, self.settings["max_body_bytes"]))
            field = next((k for k in ("rows", "texts") if isinstance(payload, dict) and k in payload), field)
            outputs = await self.batcher.predict(self.spec.decode(payload))
        except BadRequest as err:
            return JSONResponse(err.body(), status_code=err.status)
        except Refused as err:
            return JSONResponse({"error": str(err)}, status_code=503, headers={"Retry-After": "1"})
        except Exception as err:  # the model itself failed: the server goes on
            return JSONResponse({"error": f"the model failed on this batch ({type(err).__name__}: {err})"}, 500)
        return self.encode(outputs, field)

    def encode(self, outputs: np.ndarray, field: str) -> Response:
        """The predictions; 422 when the model's output is not finite (an input far outside anything it was trained
        on overflows inside it): never a 200 with null."""
        bad = [i for i, row in enumerate(outputs) if not np.isfinite(row).all()]
        if bad:
            err = BadRequest(
                f"{field}[{bad[0]}]",
                "the model's output for it is not finite: its values lie far outside the training data's (check "
                "their units and scale)",
            )
            return JSONResponse(err.body(), status_code=422)
        return JSONResponse({"predictions": outputs_to_json(self.facts, outputs)})

    async def health(self, request: Request) -> Response:
        problem = "draining: the server is shutting down" if self.batcher.draining else await self.workers.problem()
        return PlainTextResponse(problem or "ok", status_code=503 if problem else 200)

    async def info_route(self, request: Request) -> Response:
        return JSONResponse({**self.info, "server": self.settings})

    async def metrics_route(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        batching = asyncio.create_task(self.batcher.run())
        yield
        batching.cancel()
        self.workers.stop()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 as soon as it is known to be longer than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared), limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(len(body), limit)
    return bytes(body)


def too_large(size: int, limit: int) -> BadRequest:
    return BadRequest("body", f"{size} bytes or more; at most {limit} per request (--max_body_bytes)", 413)


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


def build_app(service: ModelService, key: str | None) -> Starlette:
    routes = [
        Route("/predict", service.predict, methods=["POST"]),
        Route("/health", service.health),
        Route("/info", service.info_route),
        Route("/metrics", service.metrics_route),
    ]
    guard = Middleware(Guard, key=key, identity=service.info["identity"])
    return Starlette(routes=routes, middleware=[guard], lifespan=service.lifespan)
