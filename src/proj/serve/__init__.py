"""Serving: `python -m proj serve RUN_DIR_OR_EXPORT`, an HTTP server on LitServe (proj.cli.serve drives it).

requests.py turns a JSON request into the model's raw input array (or a BadRequest naming the field),
backends.py runs the ONNX export or the PyTorch checkpoint (both: raw inputs in, probabilities or values in the
target's units out, preprocessing baked in: proj.deploy.export.Deployable), api.py is the LitAPI, the request
check in front of the worker queue and the /metrics endpoint. Nothing here imports litserve or onnxruntime at
package import: `python -m proj --help` pays for neither.
"""
