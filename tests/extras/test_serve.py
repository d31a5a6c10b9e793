"""`python -m proj serve`: its answers, its guard, its metrics in-process (the same app uvicorn serves, through
Starlette's TestClient), and as a real server in a subprocess what only a real one shows: TLS, a body refused
before it is read, a drain of 200 requests at SIGTERM, a model process killed and restarted, a killed server
leaving nothing behind.

Every task serves what `python -m proj predict` answers on the same inputs: the digits classifier (ONNX export,
batched), the diabetes regressor (PyTorch checkpoint), the multi-label digits, sequences of several lengths and
texts (through the run's tokenizer).
"""

import asyncio
import base64
import contextlib
import csv
import hashlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import ssl
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

from conftest import CONFIGS, DEFAULT, cli, cli_in, help_text, usage_error
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
MULTILABEL = ["--config", str(CONFIGS / "experiment" / "digits_multilabel.yaml")]
EXPORTS = "export" in commands()  # the export extra is installed
DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
KEY = "k" * 32


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


@contextlib.contextmanager
def served(target: Path, *options: str, env: dict[str, str] | None = None):
    """`python -m proj serve TARGET OPTIONS` up to the point where uvicorn would start, then its app in-process
    (lifespan and all) through a TestClient: (client, the Server)."""
    from starlette.testclient import TestClient

    from proj.extras.serve.server import Server

    built = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Server, "run", lambda self, shown_as: built.append(self) or 0)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        cli("serve", str(target), f"--port={free_port()}", *options)
    with TestClient(built[0].app) as client:
        yield client, built[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A digits run with its ONNX export (when the export extra is there), a diabetes regressor, a multi-label
    digits run; each with predict's answers on its test split."""
    digits, best = train(tmp_path_factory.mktemp("digits"))
    if EXPORTS:
        cli_in(digits.parents[2], "export", "--config", str(digits / "config.yaml"), f"--ckpt_path={best}")
    diabetes, _ = train(tmp_path_factory.mktemp("diabetes"), *REGRESSION)
    multilabel, _ = train(tmp_path_factory.mktemp("multilabel"), *MULTILABEL)
    return {"digits": digits, "diabetes": diabetes, "multilabel": multilabel}


@pytest.fixture(scope="module")
def digits_app(runs):
    """The digits model served with batching (the export when there is one): (client, server)."""
    with served(runs["digits"], "--max_batch_size=8", "--batch_timeout=0.01") as app:
        yield app


def digit_images(ids: list[str]) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[[int(i) for i in ids]]  # raw 0..16 values, as the data module stores them


def png(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def png_header(width: int, height: int, channels: int = 1) -> str:
    """A PNG's signature, header and end, without pixel data: what a server must judge by its header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, {1: 0, 3: 2}[channels], 0, 0, 0)
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")).decode()


def assert_classified_like_predict(answers: list[dict], rows: list[dict]) -> None:
    assert len(answers) == len(rows)
    for answer, row in zip(answers, rows, strict=True):
        assert answer["class"] == row["predicted"], row["id"]
        expected = {name.removeprefix("p_"): float(v) for name, v in row.items() if name.startswith("p_")}
        assert answer["probabilities"] == pytest.approx(expected, abs=1e-5)


def post(client, body: bytes | dict, **headers: str) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    answer = client.post("/predict", content=data, headers={"Content-Type": "application/json", **headers})
    return answer.status_code, answer.json()


# -- every task answers what predict answered -------------------------------------------------------------------


def test_digits_equal_predict_with_the_models_identity_on_every_answer(runs, digits_app):
    client, _ = digits_app
    rows = read_predictions(runs["digits"])
    images = digit_images([r["id"] for r in rows])
    for start in range(0, len(rows), 200):  # the whole test split as (n, 1, 8, 8), 200 samples a request
        status, answer = post(client, {"inputs": images[start : start + 200, None].tolist()})
        assert status == 200
        assert_classified_like_predict(answer["predictions"], rows[start : start + 200])
    # a grey image without its channel axis, and the same image as a base64 PNG of its raw values
    status, answer = post(client, {"inputs": [images[0].tolist(), png(images[1])]})
    assert status == 200
    assert_classified_like_predict(answer["predictions"], rows[:2])
    served_file = runs["digits"] / ("export/model.onnx" if EXPORTS else "checkpoints")
    if EXPORTS:  # the SHA-256 of the file served, the run, the version: on answers, refusals and /info alike
        digest = hashlib.sha256(served_file.read_bytes()).hexdigest()
        for answer in (client.get("/health"), client.post("/predict", content=b"{")):
            assert answer.headers["x-model-sha256"] == digest and answer.headers["x-model-run"] == "default/version_0"
            assert answer.headers["x-model-version"] == "version_0"
        assert client.get("/info").json()["identity"]["sha256"] == digest


def test_diabetes_rows_from_the_checkpoint_equal_predict(runs):
    from sklearn.datasets import load_diabetes

    rows = read_predictions(runs["diabetes"])
    features = load_diabetes(scaled=False).data[[int(r["id"]) for r in rows]]  # raw units
    body = {"rows": [dict(zip(DIABETES_FEATURES, map(float, x), strict=True)) for x in features]}
    with served(runs["diabetes"], "--backend=pytorch", "--max_batch_size=1", "--model_version=2026-12") as (client, _):
        status, answer = post(client, body)
        assert status == 200
        predicted = [p["progression"] for p in answer["predictions"]]
        assert predicted == pytest.approx([float(r["progression"]) for r in rows], rel=1e-5)
        info = client.get("/info").json()
        assert info["model"]["backend"] == "pytorch" and info["model"]["features"] == DIABETES_FEATURES
        assert info["identity"]["version"] == "2026-12" == client.get("/health").headers["x-model-version"]


def test_multilabel_digits_answer_the_labels_at_the_runs_thresholds_like_predict(runs):
    rows = read_predictions(runs["multilabel"])[:100]
    images = digit_images([r["id"] for r in rows])
    with served(runs["multilabel"], "--backend=pytorch") as (client, _):
        status, answer = post(client, {"inputs": images[:, None].tolist()})
    assert status == 200
    for served_row, row in zip(answer["predictions"], rows, strict=True):
        assert ";".join(served_row["labels"]) == row["predicted"], row["id"]
        expected = {name.removeprefix("p_"): float(v) for name, v in row.items() if name.startswith("p_")}
        assert served_row["probabilities"] == pytest.approx(expected, abs=1e-5)


def test_sequences_of_several_lengths_equal_predict(tmp_path):
    """A sequence file's run: its test utterances sent raw, of 3 to 19 steps, several per request."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 20, 120)
    labels = np.arange(120) % 2
    ramps = [np.linspace(0, 1, n) * (1 if y else -1) for n, y in zip(lengths, labels, strict=True)]
    seqs = [np.stack([ramp, rng.normal(size=len(ramp))], 1) for ramp in ramps]
    np.savez(tmp_path / "s.npz", steps=np.concatenate(seqs), lengths=lengths, labels=labels, classes=["down", "up"],
             ids=[f"utt{i}" for i in range(120)])  # fmt: skip
    data = ["--data=proj.data.SequenceFileDataModule", "--data.init_args.path=s.npz", "--data.init_args.batch_size=16"]
    net = "--model.init_args.net=proj.nets.SequenceCNN"
    run, _ = train(tmp_path, "--config", str(CONFIGS / "experiment" / "japanese_vowels.yaml"), *data, net)
    rows = read_predictions(run)
    inputs = [seqs[int(r["id"].removeprefix("utt"))].tolist() for r in rows]
    with served(run, "--backend=pytorch", "--max_batch_size=4") as (client, _):
        answers = [post(client, {"inputs": inputs[i : i + 3]}) for i in range(0, len(inputs), 3)]
    assert {status for status, _ in answers} == {200}
    assert_classified_like_predict([p for _, a in answers for p in a["predictions"]], rows)


@pytest.mark.skipif(not EXPORTS, reason="the export extra is not installed")
def test_texts_are_served_through_the_runs_tokenizer_equal_to_predict(text_export):
    from helpers import NEW_TEXTS

    run, _, predicted = text_export  # the export the export extra's test checks too
    with served(run / "export", "--max_batch_size=4") as (client, _):
        status, answer = post(client, {"texts": NEW_TEXTS})
        assert status == 200, answer
        for row, served_row in zip(predicted, answer["predictions"], strict=True):
            assert served_row["class"] == row["predicted"]
            assert served_row["probabilities"]["dogs"] == pytest.approx(float(row["p_dogs"]), abs=1e-5)
        status, answer = post(client, {"texts": ["a text", "  "]})
        assert status == 422 and answer["field"] == "texts[1]", answer
        status, answer = post(client, {"inputs": [[1, 2, 3]]})
        assert status == 400 and '{"texts": ["a text", ...]}' in answer["error"], answer


# -- bad requests, the key, the metrics -------------------------------------------------------------------------

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
    (b'{"inputs": [' + b"0," * 600_000 + b"0]}", 413, "body"),  # past --max_body_bytes (1 MB here)
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


def test_bad_requests_get_a_4xx_naming_the_field_and_the_metrics_count_every_answer(runs):
    """Each refusal names its field; then /metrics holds exactly the requests sent, by status, a latency histogram
    in seconds and the samples per model call (Prometheus names: _total, _seconds, _bucket)."""
    options = ("--max_batch_size=1", "--max_samples=100")
    for name, cases, good, computed in (  # computed: refusals the model computed (a non-finite output)
        ("digits", BAD_IMAGES, {"inputs": [[[0] * 8] * 8] * 3}, 0),
        ("diabetes", BAD_ROWS, {"rows": [dict.fromkeys(DIABETES_FEATURES, 1.0)] * 3}, 1),
    ):
        with served(runs[name], "--backend=pytorch", "--max_body_bytes=1000000", *options) as (client, _):
            for body, status, field in cases:
                got, answer = post(client, body)
                shown = body[:60] if isinstance(body, bytes) else str(body)[:80]
                assert (got, answer.get("field")) == (status, field), (shown, answer)
                assert field in answer["error"]
            for _ in range(5):
                assert post(client, good)[0] == 200
            metrics = scrape(client.get("/metrics").text)
        statuses = [status for _, status, _ in cases]
        for status in set(statuses):
            assert metrics[f'proj_serve_requests_total{{status="{status}"}}'] == statuses.count(status), status
        assert metrics['proj_serve_requests_total{status="200"}'] == 5
        assert metrics["proj_serve_request_duration_seconds_count"] == len(cases) + 5
        assert metrics['proj_serve_request_duration_seconds_bucket{le="+Inf"}'] == len(cases) + 5
        assert metrics["proj_serve_batch_samples_count"] == 5 + computed
        assert metrics["proj_serve_batch_samples_sum"] == 15 + computed
        assert metrics["proj_serve_model_call_duration_seconds_count"] == 5 + computed


def scrape(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))}


def test_an_api_key_guards_every_route_but_health(runs):
    with served(runs["diabetes"], "--backend=pytorch", "--host=0.0.0.0", env={"PROJ_SERVE_API_KEY": KEY}) as app:
        client, _ = app
        body = {"rows": [dict.fromkeys(DIABETES_FEATURES, 1.0)]}
        assert post(client, body)[0] == 401  # no key
        assert post(client, body, Authorization="Bearer " + "x" * 32)[0] == 401  # a wrong one
        assert post(client, body, Authorization="Bearer " + KEY[:-1])[0] == 401  # a prefix of the right one
        assert post(client, body, Authorization="Bearer " + KEY)[0] == 200
        assert post(client, body, **{"X-API-Key": KEY})[0] == 200
        for path in ("/info", "/metrics"):
            assert client.get(path).status_code == 401 and client.get(path, headers={"X-API-Key": KEY}).is_success
        refused = client.get("/info")
        assert refused.headers["www-authenticate"] == "Bearer" and "Authorization: Bearer" in refused.json()["error"]
        assert client.get("/health").text == "ok"  # load balancers probe it without a key


def test_the_drain_runs_waiting_batches_at_once_and_refuses_what_is_not_answered_in_time_with_503():
    """The batcher alone. A batch waiting to fill (up to 60 s) runs as soon as the drain begins. A model call that
    takes 5 s, and a request queued behind it, are refused (503) when the drain time (0.5 s) is up, never left
    waiting; a request that comes after the drain has begun is refused at once."""
    from proj.extras.serve.batching import Batcher, Refused

    class Model:
        size = 1

        def __init__(self, seconds: float):
            self.seconds = seconds

        async def run(self, x):
            await asyncio.sleep(self.seconds)
            return x * 2

    class NoMetrics:
        def model_call(self, *args):
            pass

    def sample(i: float) -> np.ndarray:
        return np.full((1, 2), i, np.float32)

    async def scenario(seconds: float, max_batch_size: int, requests: int):
        batcher = Batcher(Model(seconds), NoMetrics(), max_batch_size, batch_timeout=60)
        batching = asyncio.create_task(batcher.run())
        await asyncio.sleep(0)
        sent = [asyncio.create_task(batcher.predict(sample(i))) for i in range(requests)]
        await asyncio.sleep(0.1)
        start = time.monotonic()
        batcher.drain(0.5)
        answers = await asyncio.gather(*sent, batcher.predict(sample(9)), return_exceptions=True)
        batching.cancel()
        return answers, time.monotonic() - start

    answers, seconds = asyncio.run(scenario(0, max_batch_size=4, requests=3))  # 3 of 4: waiting to fill
    assert [a.tolist() for a in answers[:3]] == [[[0, 0]], [[2, 2]], [[4, 4]]] and seconds < 0.5
    assert isinstance(answers[3], Refused)
    answers, seconds = asyncio.run(scenario(5, max_batch_size=2, requests=3))  # 2 in the model, 1 queued
    assert all(isinstance(a, Refused) for a in answers) and 0.4 < seconds < 4, (answers, seconds)


def test_sequences_from_several_requests_are_padded_into_one_model_call():
    from proj.extras.serve.backends import model_inputs
    from proj.extras.serve.batching import join, split
    from proj.extras.serve.requests import InputSpec

    spec = InputSpec.from_facts({"input_shape": ["batch", "time", 2], "input_dtype": "float32"})
    first = spec.decode({"inputs": [[[1, 2]], [[1, 1], [2, 2], [3, 3]]]})
    second = spec.decode({"inputs": [[[5, 5], [5, 5]]]})
    values, lengths = model_inputs(join([first, second]))  # what the backend gets: padded to the longest
    assert values.shape == (3, 3, 2) and lengths.tolist() == [1, 3, 2]
    answers = split(np.stack([values.sum((1, 2)), lengths], 1), [len(first), len(second)])
    assert answers[0].tolist() == [[3, 1], [12, 3]] and answers[1].tolist() == [[20, 2]]


# -- usage errors -----------------------------------------------------------------------------------------------

# (id, arguments, environment, what the one line names). {run}: the diabetes run; {tmp}: the case's folder; {taken}:
# a port in use; {bad_json} and {bad_onnx}: copies of the digits export with a corrupt model.json or model.onnx.
SERVE_USAGE = [
    ("target_missing", ["{tmp}/nowhere"], {}, "nowhere does not exist"),
    ("target_without_model", ["{tmp}"], {}, "holds no model"),
    ("onnx_without_export", ["{run}", "--backend=onnx"], {}, "holds no model.onnx"),
    ("batch_size_zero", ["{run}", "--max_batch_size=0"], {}, "--max_batch_size 0 must be at least 1"),
    ("workers_negative", ["{run}", "--workers=-1"], {}, "--workers -1 must be at least 0"),
    ("port_privileged", ["{run}", "--port=80"], {}, "--port 80 must be at least 1024"),
    ("port_too_large", ["{run}", "--port=70000"], {}, "--port 70000 is not a TCP port"),
    ("port_taken", ["{run}", "--port={taken}"], {}, "Address already in use"),
    ("batch_timeout_negative", ["{run}", "--batch_timeout=-1"], {}, "--batch_timeout -1.0"),
    ("ckpt_missing", ["{run}", "--backend=pytorch", "--ckpt_path={tmp}/gone.ckpt"], {}, "gone.ckpt does not exist"),
    ("model_json_corrupt", ["{bad_json}"], {}, "model.json cannot be read"),
    ("model_onnx_corrupt", ["{bad_onnx}"], {}, "cannot be loaded by onnxruntime"),
    ("open_host_without_key", ["{run}", "--host=0.0.0.0"], {}, "set the API key in PROJ_SERVE_API_KEY"),
    ("short_key", ["{run}"], {"PROJ_SERVE_API_KEY": "secret"}, "a key of 6 characters; give 16 or more"),
    ("key_file_missing", ["{run}", "--api_key_file={tmp}/key.txt"], {}, "key.txt does not exist"),
    ("key_on_the_command_line", ["{run}", "--api_key=" + KEY], {}, "api_key"),
    ("tls_key_alone", ["{run}", "--tls_key={tmp}/key.pem"], {}, "give both files"),
    ("tls_files_missing", ["{run}", "--tls_cert={tmp}/c.pem", "--tls_key={tmp}/k.pem"], {}, "No such file"),
    ("body_limit_tiny", ["{run}", "--max_body_bytes=10"], {}, "--max_body_bytes 10 must be at least 64"),
    ("host_unknown", ["{run}", "--host=no-such-host.invalid"], {"PROJ_SERVE_API_KEY": KEY}, "is not an address"),
]


@pytest.mark.parametrize(("args", "env", "named"), [c[1:] for c in SERVE_USAGE], ids=[c[0] for c in SERVE_USAGE])
def test_serve_usage_errors_name_the_problem_before_serving(runs, tmp_path, capsys, monkeypatch, args, env, named):
    if any("bad_" in a for a in args) and not EXPORTS:
        pytest.skip("the export extra is not installed: no export to corrupt")
    places = {"run": str(runs["diabetes"]), "tmp": str(tmp_path)}
    for name, file, content in (("bad_json", "model.json", b"{half a json"), ("bad_onnx", "model.onnx", b"\0" * 64)):
        if EXPORTS and any(name in a for a in args):
            shutil.copytree(runs["digits"] / "export", tmp_path / name)
            (tmp_path / name / file).write_bytes(content)
        places[name] = str(tmp_path / name)
    monkeypatch.delenv("PROJ_SERVE_API_KEY", raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        places["taken"] = str(taken.getsockname()[1])
        error = usage_error(capsys, "serve", *(a.format(**places) for a in args))
    assert named in error, error


def test_help_shows_its_own_options(capsys):
    out = help_text(capsys, "serve")
    options = ["--host", "--port", "--api_key_file", "--tls_cert", "--tls_key", "--backend", "--max_batch_size",
               "--batch_timeout", "--workers", "--max_body_bytes", "--drain_seconds", "--model_version"]  # fmt: skip
    for option in ["target", *options]:
        assert option in out, option
    assert "PROJ_SERVE_API_KEY" in out


# -- a real server ------------------------------------------------------------------------------------------------


def start(target: Path, *options: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "proj", "serve", str(target), f"--port={port}", *options]
    # Its output goes to a file, read at the end: a pipe nobody reads while it serves would block it once full.
    log = open(target / f"server-{port}.log", "w")  # noqa: SIM115  one per server; read by output()
    environment = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        command, cwd=target, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment
    )
    process.log = log
    return process, port


def output(process: subprocess.Popen) -> str:
    process.log.flush()
    return Path(process.log.name).read_text()


# Start-up imports torch and Lightning: seconds on an idle machine, a minute or more on a busy one.
HEALTHY_WITHIN_S = 300


def wait_healthy(process: subprocess.Popen, url: str, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        assert process.poll() is None, output(process)[-3000:]
        with contextlib.suppress(OSError):
            if get(url + "/health", context) == (200, "ok"):
                return
        time.sleep(0.3)
    raise AssertionError(f"{url}/health not ok within {HEALTHY_WITHIN_S} s")


def get(url: str, context: ssl.SSLContext | None = None, **headers: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def post_status(url: str, body: dict, context: ssl.SSLContext | None = None, **headers: str) -> int | str:
    """The status of one request, or the error that kept it from an answer."""
    request = urllib.request.Request(
        url + "/predict", json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=120, context=context) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
    with contextlib.suppress(ProcessLookupError):  # raised when the whole session has ended already
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made here (openssl)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_with_a_key_refuses_a_large_body_unread_and_drains_200_requests_at_sigterm(runs, tmp_path):
    """Over TLS (a certificate made here) with an API key from a file: the key is checked; a body announced as 1 GB
    is refused (413) at once, before it is sent; 200 requests wait in a batch, SIGTERM comes, and every one is
    answered 200; the server exits 0 without a traceback."""
    cert, key_pem = self_signed(tmp_path)
    (tmp_path / "api_key").write_text(KEY + "\n")
    options = [f"--tls_cert={cert}", f"--tls_key={key_pem}", f"--api_key_file={tmp_path / 'api_key'}"]
    batching = ["--max_batch_size=256", "--batch_timeout=60", "--drain_seconds=30", "--max_body_bytes=100000"]
    process, port = start(runs["digits"], *options, *batching)
    url, tls = f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(cert))
    auth = {"Authorization": "Bearer " + KEY}
    try:
        wait_healthy(process, url, tls)
        assert get(url + "/info", tls)[0] == 401 and get(url + "/info", tls, **auth)[0] == 200
        with pytest.raises((OSError, http.client.HTTPException)):  # no plain HTTP on a TLS port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
            tls.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):  # headers only: the body never comes, the answer does
            conn.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode()
                         + b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")  # fmt: skip
            assert conn.recv(4096).split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Request Entity Too Large"
        body = {"inputs": [[[0] * 8] * 8]}
        with ThreadPoolExecutor(200) as pool:
            answers = [pool.submit(post_status, url, body, tls, **auth) for _ in range(200)]
            deadline = time.monotonic() + 240
            while in_progress(url, tls, auth) < 200 and time.monotonic() < deadline:
                time.sleep(0.2)  # all 200 wait in one batch (up to --batch_timeout 60 s)
            assert not any(a.done() for a in answers)
            process.send_signal(signal.SIGTERM)
            statuses = [a.result(timeout=120) for a in answers]
        assert statuses == [200] * 200, sorted(set(map(str, statuses)))
        assert process.wait(60) == 0, output(process)[-3000:]
        assert "Traceback" not in output(process), output(process)[-3000:]
    finally:
        stop(process)


def in_progress(url: str, context: ssl.SSLContext, headers: dict[str, str]) -> float:
    return scrape(get(url + "/metrics", context, **headers)[1]).get("proj_serve_requests_in_progress", 0)


def model_processes(pid: int) -> list[int]:
    """The server's spawned model processes (not multiprocessing's resource tracker)."""
    found = []
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


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


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an ended child that its parent, or init, has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_model_process_is_reported_and_restarted_and_a_killed_server_leaves_nothing(runs):
    """--workers 1: SIGKILL the model process; /health says so (503) and the log too, the server starts it again
    and answers. Then SIGKILL the server itself: its model process ends with it and the port is free."""
    process, port = start(runs["digits"], "--workers=1")  # the ONNX export: a model process without torch
    url, body = f"http://127.0.0.1:{port}", {"inputs": [[[0] * 8] * 8]}
    try:
        wait_healthy(process, url)
        (worker,) = model_processes(process.pid)
        os.kill(worker, signal.SIGKILL)
        status, text = get(url + "/health")
        assert status == 503 and "model process died" in text, (status, text)
        wait_healthy(process, url)
        assert post_status(url, body) == 200
        assert "a model process died" in output(process) and "started again" in output(process)
        (restarted,) = model_processes(process.pid)
        assert restarted != worker
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        deadline = time.monotonic() + 60  # polled: ends as soon as the model process is gone
        while alive(restarted) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(restarted), "a killed server left its model process behind"
        with socket.socket() as probe:  # free for a restart: nothing listens there (TIME_WAIT is no obstacle)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
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
