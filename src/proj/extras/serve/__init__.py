"""Serving: `python -m proj serve RUN_DIR_OR_EXPORT`, an HTTP server on LitServe (command.py drives it).

requests.py turns a JSON request into the model's raw input array (or a BadRequest naming the field),
backends.py runs the ONNX export or the PyTorch checkpoint (both: raw inputs in, probabilities or values in the
target's units out, preprocessing baked in: proj.models.deployable), api.py is the LitAPI, the request check in
front of the worker queue and the /metrics endpoint, stopping.py how Ctrl+C and SIGTERM end every process.
Nothing imported here imports litserve or onnxruntime: `python -m proj --help` pays for neither.
Docs: docs/extras/serve.md.
"""

COMMANDS = {
    "serve": ("proj.extras.serve.command", "an HTTP server for a run's model (LitServe): predict, info, metrics")
}
