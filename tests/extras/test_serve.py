"""`python -m proj serve` as a real server: a subprocess on a free 127.0.0.1 port, real HTTP requests.

Its answers equal `python -m proj predict` on the same inputs (the digits classifier through the ONNX export with
dynamic batching, the diabetes regressor through the PyTorch checkpoint without), bad requests get a 4xx naming
the field and leave the server answering, 64 concurrent requests are all answered right, SIGTERM and Ctrl+C stop it
with status 0, no traceback and no process left behind, the requests in flight answered.
"""

import base64
import contextlib
import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from proj.cli.registry import commands

from conftest import CONFIGS, DEFAULT, cli_in, help_text, usage_error

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve")]

TINY = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--test_after_fit=false",
]
REGRESSION = ["--config", str(CONFIGS / "experiment" / "diabetes_regression.yaml")]
EXPORTS = "export" in commands()  # the export extra is installed
DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def train(workdir: Path, *configs: str) -> tuple[Path, str]:
    """A tiny run and its predict on the test split: (run directory, best checkpoint)."""
    result = cli_in(workdir, "fit", "--config", DEFAULT, *configs, *TINY)
    best = str(workdir / result.trainer.checkpoint_callback.best_model_path)
    run = Path(best).parent.parent
    cli_in(workdir, "predict", "--config", str(run / "config.yaml"), f"--ckpt_path={best}", *TINY[-3:-1])
    return run, best


def read_predictions(run: Path) -> list[dict[str, str]]:
    with open(run / "predict" / "predictions.csv") as f:
        return list(csv.DictReader(f))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "proj", "serve", str(target), f"--port={port}", *options]
    # A session of its own: teardown can then end LitServe's processes with the server, whatever state it is in.
    # Its output goes to a file, read at the end: a pipe nobody reads while it serves would block it once full.
    log = open(target / "server.log", "w")  # noqa: SIM115  closed with the process, in output()
    process = subprocess.Popen(command, cwd=target, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    process.log = log
    return process, f"http://127.0.0.1:{port}"


def output(process: subprocess.Popen) -> str:
    process.log.flush()
    return Path(process.log.name).read_text()


# Start-up spawns model workers that import torch and Lightning: seconds on an idle machine, minutes on a busy one.
# The wait ends as soon as /health answers, or at once when the server exits.
HEALTHY_WITHIN_S = 300


def wait_healthy(process: subprocess.Popen, url: str, seconds: float = HEALTHY_WITHIN_S) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, output(process)[-3000:]
        try:
            if get(url + "/health") == (200, "ok"):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url}/health not ok within {seconds} s")


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.status, answer.read().decode()


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "/predict", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.update(children)
        todo += children
    return found


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """A digits run served from its ONNX export with batching, a diabetes run from its checkpoint without."""
    digits, best = train(tmp_path_factory.mktemp("digits"))
    if EXPORTS:  # served from its ONNX export; without the export extra, from its checkpoint
        cli_in(digits.parents[2], "export", "--config", str(digits / "config.yaml"), f"--ckpt_path={best}")
    diabetes, _ = train(tmp_path_factory.mktemp("diabetes"), *REGRESSION)
    started = [
        start(digits, "--max_batch_size=8", "--batch_timeout=0.01", "--workers=2"),
        start(diabetes, "--backend=pytorch", "--max_batch_size=1", "--max_samples=100"),
    ]
    try:
        for process, url in started:
            wait_healthy(process, url)
        yield {"digits": (digits, *started[0]), "diabetes": (diabetes, *started[1])}
    finally:
        for process, _ in started:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (the clean shutdown), then SIGKILL for whatever of the server's session is left: a server killed
    alone would orphan LitServe's worker, logger and HTTP processes, still serving and using the CPU."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
    with contextlib.suppress(ProcessLookupError):  # raised when the whole session has ended already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def digit_images(ids: list[str]) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[[int(i) for i in ids]]  # raw 0..16 values, as the data module stores them


def png(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def assert_classified_like_predict(answers: list[dict], rows: list[dict]) -> None:
    assert len(answers) == len(rows)
    for answer, row in zip(answers, rows, strict=True):
        assert answer["class"] == row["predicted"], row["id"]
        expected = {name.removeprefix("p_"): float(v) for name, v in row.items() if name.startswith("p_")}
        assert answer["probabilities"] == pytest.approx(expected, abs=1e-5)


def test_digits_from_the_onnx_export_equal_predict(servers):
    run, _, url = servers["digits"]
    rows = read_predictions(run)
    images = digit_images([r["id"] for r in rows])
    for start in range(0, len(rows), 200):  # the whole test split as (n, 1, 8, 8), 200 samples a request
        status, answer = post(url, {"inputs": images[start : start + 200, None].tolist()})
        assert status == 200
        assert_classified_like_predict(answer["predictions"], rows[start : start + 200])
    # a grey image without its channel axis, and the same image as a base64 PNG of its raw values
    status, answer = post(url, {"inputs": [images[0].tolist(), png(images[1])]})
    assert status == 200
    assert_classified_like_predict(answer["predictions"], rows[:2])


def test_diabetes_rows_from_the_checkpoint_equal_predict(servers):
    from sklearn.datasets import load_diabetes

    run, _, url = servers["diabetes"]
    rows = read_predictions(run)
    features = load_diabetes(scaled=False).data[[int(r["id"]) for r in rows]]  # raw units
    body = {"rows": [dict(zip(DIABETES_FEATURES, map(float, x), strict=True)) for x in features]}
    status, answer = post(url, body)
    assert status == 200
    predicted = [p["progression"] for p in answer["predictions"]]
    assert predicted == pytest.approx([float(r["progression"]) for r in rows], rel=1e-5)


def test_info_holds_the_model_facts_and_the_run_card(servers):
    run, _, url = servers["digits"]
    status, text = get(url + "/info")
    model = json.loads(text)["model"]
    assert status == 200 and model["backend"] == ("onnx" if EXPORTS else "pytorch")
    assert model["task"] == "classification"
    assert model["classes"] == [str(i) for i in range(10)] and model["input_shape"] == ["batch", 1, 8, 8]
    record = run / "export" / "run.json"
    if record.is_file():  # written by the run record (older runs have none: then no card)
        assert model["card"] == json.loads(record.read_text())["card"]
    diabetes = json.loads(get(servers["diabetes"][2] + "/info")[1])["model"]
    assert diabetes["backend"] == "pytorch" and diabetes["features"] == DIABETES_FEATURES


BAD_IMAGES = [  # (body, status, field)
    (b"{not json", 400, "body"),
    ({"images": []}, 400, "body"),
    ({"inputs": []}, 422, "inputs"),
    ({"inputs": [[[1, 2, 3]]]}, 422, "inputs[0]"),
    ({"inputs": [np.zeros((1, 8, 8)).tolist(), [["a"] * 8] * 8]}, 422, "inputs[1]"),
    ({"inputs": [[[True] * 8] * 8]}, 422, "inputs[0]"),
    ({"inputs": [[[0] * 8] * 7 + [[0] * 7]]}, 422, "inputs[0]"),
    ({"inputs": ["not base64!"]}, 422, "inputs[0]"),
    ({"inputs": [np.zeros((8, 8)).tolist()] * 257}, 413, "inputs"),
    ({"rows": [{"age": 1}]}, 400, "rows"),
]
BAD_ROWS = [
    ({"rows": [dict.fromkeys(DIABETES_FEATURES[1:], 0.0)]}, 422, "rows[0].age"),
    ({"rows": [{**dict.fromkeys(DIABETES_FEATURES, 0.0), "bmi": "high"}]}, 422, "rows[0].bmi"),
    ({"rows": [{**dict.fromkeys(DIABETES_FEATURES, 0.0), "weight": 1.0}]}, 422, "rows[0].weight"),
    ({"rows": [dict.fromkeys(DIABETES_FEATURES, 0.0)] * 101}, 413, "rows"),
]


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_goes_on(servers):
    for name, cases in (("digits", BAD_IMAGES), ("diabetes", BAD_ROWS)):
        _, process, url = servers[name]
        for body, status, field in cases:
            got, answer = post(url, body)
            assert (got, answer["field"]) == (status, field), body if isinstance(body, bytes) else str(body)[:80]
            assert field in answer["error"]
        assert process.poll() is None
        good = {"rows": [dict.fromkeys(DIABETES_FEATURES, 1.0)]} if name == "diabetes" else {"inputs": [[[0] * 8] * 8]}
        assert post(url, good)[0] == 200
    metrics = get(servers["digits"][2] + "/metrics")[1]
    assert 'proj_serve_requests_total{outcome="refused_422"}' in metrics


def test_64_concurrent_requests_are_all_answered_right(servers):
    run, _, url = servers["digits"]
    rows = read_predictions(run)[:64]
    images = digit_images([r["id"] for r in rows])
    calls, samples = model_calls(url)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda image: post(url, {"inputs": [image.tolist()]}), images, timeout=60))
    assert [status for status, _ in answers] == [200] * 64
    assert_classified_like_predict([a["predictions"][0] for _, a in answers], rows)
    deadline = time.monotonic() + 60  # the metrics reach the logger process through a queue: a little later
    while model_calls(url)[1] < samples + 64 and time.monotonic() < deadline:
        time.sleep(0.2)
    after = model_calls(url)
    assert after[1] == samples + 64 and after[0] - calls < 64  # dynamic batching: fewer model calls than requests


def model_calls(url: str) -> tuple[float, float]:
    """(model calls, samples) so far, from the server's Prometheus metrics."""
    lines = dict(line.rsplit(" ", 1) for line in get(url + "/metrics")[1].splitlines() if not line.startswith("#"))
    return float(lines.get("proj_serve_batch_samples_count", 0)), float(lines.get("proj_serve_batch_samples_sum", 0))


def test_sigterm_and_ctrl_c_stop_the_server_cleanly_with_requests_in_flight(servers):
    """SIGTERM to the server (a scheduler), SIGINT to its whole process group (a terminal's Ctrl+C): each stops every
    process of the server with status 0 and no traceback, and each request in flight is answered or refused
    (503, or the connection refused once the server has closed its socket), never failed or left hanging."""
    for name, stop_it in (("diabetes", "SIGTERM"), ("digits", "SIGINT to the group")):
        _, process, url = servers[name]
        children = descendants(process.pid)
        assert len(children) >= 3  # the manager, the model worker(s), the HTTP server, LitServe's logger
        body = {"rows": [dict.fromkeys(DIABETES_FEATURES, 1.0)]} if name == "diabetes" else {"inputs": [[[0] * 8] * 8]}
        with ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(post_or_refused, url, body) for _ in range(32)]
            while not any(a.done() for a in answers):  # requests are flowing: now stop it
                time.sleep(0.01)
            if stop_it == "SIGTERM":
                process.send_signal(signal.SIGTERM)
            else:
                os.killpg(process.pid, signal.SIGINT)
            statuses = {a.result(timeout=60) for a in answers}
        assert statuses <= {200, 503, "refused"} and 200 in statuses, statuses
        assert process.wait(120) == 0, output(process)[-3000:]
        out = output(process)
        assert "Traceback" not in out and "crashed" not in out, out[-3000:]
        deadline = time.monotonic() + 60  # polled: ends as soon as every process is gone
        while (left := [p for p in children if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes left behind by {name}'s server: {left}"


def post_or_refused(url: str, body: dict) -> int | str:
    """The status of one request, or "refused" when the server no longer accepts connections."""
    request = urllib.request.Request(url + "/predict", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except (ConnectionError, urllib.error.URLError):
        return "refused"


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an ended child that its parent, or init, has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_usage_errors_name_the_problem(servers, tmp_path, capsys):
    assert "nowhere does not exist" in usage_error(capsys, "serve", str(tmp_path / "nowhere"))
    assert "holds no model" in usage_error(capsys, "serve", str(tmp_path))
    diabetes = str(servers["diabetes"][0])
    assert "holds no model.onnx" in usage_error(capsys, "serve", diabetes, "--backend=onnx")
    assert "--max_batch_size 0 must be at least 1" in usage_error(capsys, "serve", diabetes, "--max_batch_size=0")


def test_help_shows_its_own_options(capsys):
    out = help_text(capsys, "serve")
    for option in ("target", "--port", "--backend", "--max_batch_size", "--batch_timeout", "--workers"):
        assert option in out, option
