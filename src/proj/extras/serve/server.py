"""The server: the model loaded (or its processes started) first, then uvicorn on the host and port, until
SIGTERM or Ctrl+C drains it (proj.extras.serve.stopping). Tests run `app` in-process, without uvicorn."""

from __future__ import annotations

from typing import Any

import uvicorn

from proj.extras.serve.app import ModelService, build_app
from proj.extras.serve.stopping import DrainingServer
from proj.extras.serve.workers import model_workers


class Server:
    def __init__(
        self,
        backend: Any,
        facts: dict[str, Any],
        info: dict[str, Any],
        settings: dict[str, Any],
        key: str | None = None,
        tls: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
    ):
        self.workers = model_workers(backend, settings["workers"], give_up=self.give_up)
        self.service = ModelService(self.workers, facts, info, settings)
        self.app = build_app(self.service, key)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=tls and tls[0],
            ssl_keyfile=tls and tls[1],
            timeout_graceful_shutdown=int(settings["drain_seconds"]) + 2,  # a backstop: the batcher answers them all
            lifespan="on",
        )
        drain = settings["drain_seconds"]
        self.uvicorn = DrainingServer(config, on_drain=lambda: self.service.batcher.drain_soon(drain))
        self.workers.start()  # a model that cannot load fails here, before the server says it serves

    def run(self, shown_as: str) -> int:
        """Serve until stopped; the exit status: 0 once drained, 1 when the model processes kept dying."""
        backend = self.service.info["model"]["backend"]
        print(f"serving the {backend} model on {shown_as}: POST /predict, GET /health /info /metrics", flush=True)
        self.uvicorn.run()
        print("server stopped", flush=True)
        return self.uvicorn.exit_status

    def give_up(self, why: str) -> None:
        self.uvicorn.give_up(why)
