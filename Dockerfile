# The server of a trained run (`python -m proj serve`) in a CPU-only image: docs/extras/serve_container.md.
#   docker build -t proj-serve .
#   docker run --rm -p 8000:8000 -e PROJ_SERVE_API_KEY -v "$PWD/logs/default/version_0:/model:ro" proj-serve
# Layers go from what changes least to what changes most: torch, the other dependencies, then the source, so an
# edit of src/ rebuilds in seconds and only an edit of constraints.txt or pyproject.toml downloads again.

# A tag, not latest. For byte-for-byte rebuilds pin the digest too: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

# PyPI's Linux torch wheel is the CUDA build (several GB of CUDA libraries a CPU server never loads); PyTorch's
# CPU index has the same release as 2.13.0+cpu. An argument, so that a mirror of it can be given.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# No .pyc written at run time (the user cannot write site-packages anyway: pip compiles them at install), logs
# straight to `docker logs`, no pip cache left in a layer.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# torch alone, from the CPU index, at constraints.txt's version; its own dependencies come from PyPI below.
COPY constraints.txt ./
RUN pip install --no-deps --index-url "${TORCH_INDEX}" -c constraints.txt torch

# The core's dependencies and the extras serving needs (serve: Starlette, uvicorn, Prometheus; export: onnxruntime
# for the ONNX backend), read from pyproject.toml, pinned by constraints.txt. Not the dev, tune or logger extras.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; print('\n'.join(p['dependencies'] + extras['serve'] + extras['export']))" \
        > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt \
    && pip check

# The source on PYTHONPATH rather than pip-installed: nothing to build, so no build backend (setuptools, which no
# constraints file pins) is downloaded. Compiled here because the server's user cannot write __pycache__.
COPY src ./src
RUN python -m compileall -q src
ENV PYTHONPATH=/app/src

# Not root: a hole in the server is not root in the container. Its home is where libraries keep caches. USER by
# number: Kubernetes' runAsNonRoot can only check a numeric user.
RUN useradd --create-home --uid 10001 --user-group proj
USER 10001:10001

# The run directory or the export folder is mounted at /model (-v "$PWD/logs/default/version_0:/model:ro"). No
# VOLUME line: it would give a run without -v an empty anonymous volume instead of "/model does not exist".
EXPOSE 8000

# GET /health (no key needed) with urllib: the slim image has no curl, and one package less is one CVE feed less.
# The port and the scheme are read off the server's command line (PID 1's, or docker-init's with --init, which
# holds it too), so `--port 9000` or `--tls_cert` keep the check right; the certificate is not verified, since
# the check only asks whether this very server answers. start-period: importing torch and loading the model.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import ssl, sys, urllib.request; \
args = open('/proc/1/cmdline', 'rb').read().decode().split('\\0'); \
port = next((a[7:] for a in args if a.startswith('--port=')), \
    args[args.index('--port') + 1] if '--port' in args else '8000'); \
scheme = 'https' if any(a.startswith('--tls_cert') for a in args) else 'http'; \
answer = urllib.request.urlopen(f'{scheme}://127.0.0.1:{port}/health', timeout=4, \
    context=ssl._create_unverified_context()); \
sys.exit(answer.status != 200)"]

# docker stop sends SIGTERM: the server answers the requests in flight and exits 0 within --drain_seconds; give
# docker stop -t more than that, or it sends SIGKILL first. The exec form: python is PID 1 and gets the signal.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "proj", "serve"]
# The API key comes from PROJ_SERVE_API_KEY or --api_key_file (a mounted secret), never from this line.
CMD ["/model", "--host", "0.0.0.0"]
