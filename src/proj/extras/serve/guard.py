"""What stands in front of every route: the API key, and the model's identity on every answer.

The key comes from the environment (PROJ_SERVE_API_KEY) or a file (--api_key_file: a Docker or Kubernetes
secret), never from the command line, where `ps` shows it to every user of the machine. Clients send it as
`Authorization: Bearer KEY` (or `X-API-Key: KEY`); it is compared in constant time. GET /health answers without
it: load balancers and orchestrators probe it, and it tells nothing about the model.

Every answer, refusals included, carries the model's identity (X-Model-Run, X-Model-Version, X-Model-SHA256), so
a client or a log can tell which model answered, e.g. during a rolling update.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

from proj.cli.parser import UsageError

KEY_VARIABLE = "PROJ_SERVE_API_KEY"
SHORTEST_KEY = 16
OPEN_PATHS = ("/health",)


class Guard:
    """ASGI middleware: 401 without the right key (when there is one), the identity headers on every answer."""

    def __init__(self, app: Any, key: str | None, identity: dict[str, str]):
        self.app, self.key = app, key.encode() if key else None
        self.headers = [(f"x-model-{name}".encode(), header_value(identity[name])) for name in IDENTITY_HEADERS]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_identified(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        if self.key and scope["path"] not in OPEN_PATHS and not self.authorized(scope):
            return await unauthorized(send_identified)
        await self.app(scope, receive, send_identified)

    def authorized(self, scope: dict) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key") or headers.get(b"authorization", b"").removeprefix(b"Bearer ").strip()
        return hmac.compare_digest(given, self.key)


async def unauthorized(send: Any) -> None:
    body = json.dumps({"error": "a missing or wrong API key: send the header Authorization: Bearer <key>"}).encode()
    headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})


IDENTITY_HEADERS = ("run", "version", "sha256")


def header_value(text: str) -> bytes:
    return urllib.parse.quote(text, safe="/:._-=+@ ").encode("ascii")  # a folder's name may hold any character


def api_key(key_file: Path | None, host: str) -> str | None:
    """The key the clients must send, or None; refused when the host is reachable from other machines without one."""
    if key_file is not None:
        if not Path(key_file).is_file():
            raise UsageError(f"--api_key_file {key_file} does not exist: write the key into it (one line)")
        key = Path(key_file).read_text().strip()
        where = f"--api_key_file {key_file}"
    else:
        key, where = os.environ.get(KEY_VARIABLE, "").strip(), KEY_VARIABLE
    if key and len(key) < SHORTEST_KEY:
        raise UsageError(f"{where}: a key of {len(key)} characters; give {SHORTEST_KEY} or more (openssl rand -hex 32)")
    if not key and not is_loopback(host):
        raise UsageError(
            f"--host {host} is reachable from other machines: set the API key in {KEY_VARIABLE} or give "
            "--api_key_file (never on the command line, where `ps` shows it)"
        )
    return key or None


def tls_files(cert: Path | None, key: Path | None) -> tuple[str, str] | None:
    """(certificate, key) for HTTPS, checked here: a wrong pair is one line now, not a traceback from uvicorn."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError(f"--tls_cert {cert} and --tls_key {key}: give both files (PEM), or neither for plain HTTP")
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise UsageError(f"--tls_cert {cert} --tls_key {key}: {reason}; give a PEM certificate and its key") from None
    return str(cert), str(key)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as reachable


def identity(model_file: Path, run_dir: Path | None, export_dir: Path | None, version: str | None) -> dict[str, str]:
    """Which model answers: its run (<name>/<version> folder), a version (--model_version, else the run's
    folder), and the SHA-256 of the file served (model.onnx, or the checkpoint)."""
    folder = run_dir or export_dir
    run = f"{folder.parent.name}/{folder.name}" if folder else "unknown"
    digest = hashlib.sha256()
    with open(model_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"run": run, "version": version or (folder.name if folder else "unknown"), "sha256": digest.hexdigest()}
