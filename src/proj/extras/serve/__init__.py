"""Serving: `python -m proj serve RUN_DIR_OR_EXPORT`, an HTTP server (Starlette on uvicorn; command.py drives it).

requests.py turns a JSON request into the model's raw input array (or a BadRequest naming the field),
backends.py runs the ONNX export or the PyTorch checkpoint (both: raw inputs in, probabilities or values in the
target's units out, preprocessing baked in: proj.models.deployable), app.py holds the routes, batching.py the
dynamic batching and the drain, workers.py where the model runs, guard.py the API key and the model's identity,
metrics.py /metrics, stopping.py how SIGTERM ends it, server.py puts them together.
Nothing imported here imports uvicorn or onnxruntime: `python -m proj --help` pays for neither.
Docs: docs/extras/serve.md.
"""

COMMANDS = {"serve": ("proj.extras.serve.command", "an HTTP server for a run's model: predict, health, info, metrics")}
