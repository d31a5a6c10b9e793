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
import shutil
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
from helpers import free_port

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


def start(target: Path, *options: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "proj", "serve", str(target), f"--port={port}", *options]
    # A session of its own: teardown can then end LitServe's processes with the server, whatever state it is in.
    # Its output goes to a file, read at the end: a pipe nobody reads while it serves would block it once full.
    log = open(target / f"server-{port}.log", "w")  # noqa: SIM115  one per server; read by output()
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


def png_header(width: int, height: int, channels: int = 1) -> str:
    """A PNG's signature, header and end, without pixel data: what a server must judge by its header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")).decode()


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
    # Found by the red team or since: each once a 200 with nulls, a 500, or a decode of 144 MB first.
    ({"inputs": [[[1e39] * 8] * 8]}, 422, "inputs[0]"),  # beyond float32: once a 200 with null probabilities
    (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "body"),  # nested 100k deep: once a 500
    (b'{"inputs": [' + b"9" * 5000 + b"]}", 400, "body"),  # a 5000-digit integer: once a 500
    ({"inputs": [[[10**400] * 8] * 8]}, 422, "inputs[0]"),  # an integer no float holds
    ({"inputs": [png_header(9000, 9000)]}, 422, "inputs[0]"),  # refused by its header: nothing decoded
    ({"inputs": [png_header(20000, 20000)]}, 413, "inputs[0]"),  # past PIL's bomb limit: once a 500
    ({"inputs": [png_header(8, 8)]}, 422, "inputs[0]"),  # the right size, but no pixel data: once a 500
    ({"inputs": [png_header(8, 8, channels=3)]}, 422, "inputs[0]"),  # three channels for a grey model
]
BAD_ROWS = [
    ({"rows": [dict.fromkeys(DIABETES_FEATURES[1:], 0.0)]}, 422, "rows[0].age"),
    ({"rows": [{**dict.fromkeys(DIABETES_FEATURES, 0.0), "bmi": "high"}]}, 422, "rows[0].bmi"),
    ({"rows": [{**dict.fromkeys(DIABETES_FEATURES, 0.0), "weight": 1.0}]}, 422, "rows[0].weight"),
    ({"rows": [dict.fromkeys(DIABETES_FEATURES, 0.0)] * 101}, 413, "rows"),
    ({"rows": [{**dict.fromkeys(DIABETES_FEATURES, 0.0), "bmi": 1e39}]}, 422, "rows[0].bmi"),  # once a 200 null
    ({"rows": [dict.fromkeys(DIABETES_FEATURES, 3e38)]}, 422, "rows[0]"),  # in float32's range; the output overflows
    ({"rows": [{**dict.fromkeys(DIABETES_FEATURES, 0.0), "bmi": 10**400}]}, 422, "rows[0].bmi"),
    ({"rows": [{**dict.fromkeys(DIABETES_FEATURES, 0.0), "bmi": None}]}, 422, "rows[0].bmi"),
    ({"rows": [[0.0] * 10]}, 422, "rows[0]"),  # a list, not an object keyed by column
]


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_goes_on(servers):
    for name, cases in (("digits", BAD_IMAGES), ("diabetes", BAD_ROWS)):
        _, process, url = servers[name]
        for body, status, field in cases:
            got, answer = post(url, body)
            shown = body[:60] if isinstance(body, bytes) else str(body)[:80]
            assert (got, answer.get("field")) == (status, field), (shown, answer)
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


# (id, arguments, what the one line names). {run}: the diabetes run; {tmp}: the case's folder; {taken}: a port in
# use; {bad_json} and {bad_onnx}: copies of the digits export with a corrupt model.json or model.onnx.
SERVE_USAGE = [
    ("target_missing", ["{tmp}/nowhere"], "nowhere does not exist"),
    ("target_without_model", ["{tmp}"], "holds no model"),
    ("onnx_without_export", ["{run}", "--backend=onnx"], "holds no model.onnx"),
    ("batch_size_zero", ["{run}", "--max_batch_size=0"], "--max_batch_size 0 must be at least 1"),
    ("workers_zero", ["{run}", "--workers=0"], "--workers 0 must be at least 1"),
    ("port_privileged", ["{run}", "--port=80"], "--port 80 must be at least 1024"),
    ("port_too_large", ["{run}", "--port=70000"], "--port 70000 is not a TCP port"),  # once a raw ValueError
    ("port_taken", ["{run}", "--port={taken}"], "is taken"),  # once "serving on ..." then a traceback
    ("batch_timeout_negative", ["{run}", "--batch_timeout=-1"], "--batch_timeout -1.0 must be >= 0"),
    ("ckpt_missing", ["{run}", "--backend=pytorch", "--ckpt_path={tmp}/gone.ckpt"], "gone.ckpt does not exist"),
    ("model_json_corrupt", ["{bad_json}"], "model.json cannot be read"),  # once tracebacks after "serving"
    ("model_onnx_corrupt", ["{bad_onnx}"], "cannot be loaded by onnxruntime"),
]


@pytest.mark.parametrize(("args", "named"), [c[1:] for c in SERVE_USAGE], ids=[c[0] for c in SERVE_USAGE])
def test_serve_usage_errors_name_the_problem_before_serving(servers, tmp_path, capsys, args, named):
    if any("bad_" in a for a in args) and not EXPORTS:
        pytest.skip("the export extra is not installed: no export to corrupt")
    places = {"run": str(servers["diabetes"][0]), "tmp": str(tmp_path)}
    for name, file, content in (("bad_json", "model.json", b"{half a json"), ("bad_onnx", "model.onnx", b"\0" * 64)):
        if EXPORTS:
            shutil.copytree(servers["digits"][0] / "export", tmp_path / name)
            (tmp_path / name / file).write_bytes(content)
        places[name] = str(tmp_path / name)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        places["taken"] = str(taken.getsockname()[1])
        error = usage_error(capsys, "serve", *(a.format(**places) for a in args))
    assert named in error, error


def test_a_killed_server_leaves_no_process_and_frees_its_port(servers):
    """kill -9 of the server's main process (an OOM kill, a scheduler): every other process of the server ends too,
    and the port is free for a restart. Once they went on answering, re-parented to init."""
    run, _, _ = servers["diabetes"]
    process, url = start(run, "--backend=pytorch", "--max_batch_size=1")
    try:
        wait_healthy(process, url)
        children = descendants(process.pid)
        assert len(children) >= 3, children
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        deadline = time.monotonic() + 60  # polled: ends as soon as every process is gone
        while (left := [p for p in children if alive(p)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"processes left behind by a killed server: {left}"
        with socket.socket() as probe:  # free for a restart: nothing listens there (TIME_WAIT is no obstacle)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    finally:
        stop(process)


def test_a_run_directory_alone_serves_its_model(tmp_path, monkeypatch):
    """A CSV-trained run, fine-tuned from another run's checkpoint: moved elsewhere, its training CSV and the checkpoint
    it started from deleted, its PyTorch backend still builds from the run alone and answers what predict did."""
    from proj.cli.run_dir import best_checkpoint
    from proj.data.imbalanced_table import write_imbalanced_table
    from proj.extras.serve.command import torch_backend

    monkeypatch.chdir(tmp_path)
    table = write_imbalanced_table("data/imbalanced_table.csv")
    fit = ["fit", "--config", DEFAULT, "--config", str(CONFIGS / "experiment" / "table_none.yaml"), *TINY]
    first = cli_in(tmp_path, *fit)
    start_from = first.trainer.checkpoint_callback.best_model_path
    second = cli_in(tmp_path, *fit, f"--init_from={start_from}")
    run = Path(second.trainer.log_dir)
    best = best_checkpoint(run)
    cli_in(tmp_path, "predict", "--config", str(run / "config.yaml"), f"--ckpt_path={best}", *TINY[-3:-1])
    rows = read_predictions(run)
    lines = table.read_text().splitlines()
    header = lines[0].split(",")
    raw = [dict(zip(header, lines[int(r["id"].rsplit(":", 1)[1]) - 1].split(","), strict=True)) for r in rows]
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(run, moved)
    table.unlink()
    Path(start_from).unlink()

    backend, facts = torch_backend(moved, best_checkpoint(moved), threads=1)
    backend.load()
    x = np.array([[float(row[f]) for f in facts["features"]] for row in raw], dtype=facts["input_dtype"])
    probabilities = backend(x)
    expected = np.array([[float(r[f"p_{c}"]) for c in facts["classes"]] for r in rows])
    assert facts["features"] == [h for h in header if h != "diagnosis"] and facts["task"] == "classification"
    assert np.allclose(probabilities, expected, atol=1e-5)


def test_help_shows_its_own_options(capsys):
    out = help_text(capsys, "serve")
    for option in ("target", "--port", "--backend", "--max_batch_size", "--batch_timeout", "--workers"):
        assert option in out, option


def test_sequences_of_several_lengths_from_several_requests_are_padded_into_one_model_call():
    from proj.extras.serve.api import ModelAPI
    from proj.extras.serve.backends import model_inputs
    from proj.extras.serve.requests import InputSpec

    spec = InputSpec.from_facts({"input_shape": ["batch", "time", 2], "input_dtype": "float32"})
    calls = []

    def model(x):  # each sequence's sum and length, from the padded batch the backend gets
        values, lengths = model_inputs(x)
        calls.append(values.shape)
        return np.stack([values.sum((1, 2)), lengths], 1)

    api = ModelAPI(model, {"task": "custom"}, spec, max_batch_size=4, batch_timeout=0.01)
    api.log = lambda *args: None  # LitServe's logger queue exists only inside a running server
    first = spec.decode({"inputs": [[[1, 2]], [[1, 1], [2, 2], [3, 3]]]})
    second = spec.decode({"inputs": [[[5, 5], [5, 5]]]})
    answers = api.unbatch(api.predict(api.batch([first, second])))
    assert calls == [(3, 3, 2)]  # one call: three sequences padded to the longest
    assert answers[0].tolist() == [[3, 1], [12, 3]] and answers[1].tolist() == [[20, 2]]


@pytest.mark.skipif(not EXPORTS, reason="the export extra is not installed")
def test_texts_are_served_through_the_runs_tokenizer_equal_to_predict(text_export):
    from helpers import NEW_TEXTS

    run, _, predicted = text_export  # the export the export extra's test checks too
    process, url = start(run / "export", "--max_batch_size=4")
    try:
        wait_healthy(process, url)
        status, answer = post(url, {"texts": NEW_TEXTS})
        assert status == 200, answer
        for row, served in zip(predicted, answer["predictions"], strict=True):
            assert served["class"] == row["predicted"]
            assert served["probabilities"]["dogs"] == pytest.approx(float(row["p_dogs"]), abs=1e-5)
        status, answer = post(url, {"texts": ["a text", "  "]})
        assert status == 422 and answer["field"] == "texts[1]", answer
        status, answer = post(url, {"inputs": [[1, 2, 3]]})
        assert status == 400 and '{"texts": ["a text", ...]}' in answer["error"], answer
    finally:
        stop(process)
