"""Where the MLflow logger keeps its runs (an MLflow tracking URI): made absolute, checked before training, and
searched for the run of a run directory that is resumed."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

RUN_DIR_TAG = "proj.run_dir"  # the MLflow tag that ties an MLflow run to its run directory
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")  # MLflow reads them


def absolute_sqlite(uri: str | None) -> str | None:
    """sqlite:///logs/mlflow.db -> sqlite:////<the working directory>/logs/mlflow.db. MLflow keeps one store per
    URI string for the whole process: a relative one would stay the database of the first working directory it
    was opened in (a second run from another folder, in the same process, wrote into the first one's)."""
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).expanduser().resolve()}"
    return uri


def check_store(uri: str | None) -> None:
    """Refuse, before training, a store MLflow cannot use: MLflow retries a failed open or request for about two
    minutes, silently, and then reports it deep inside the logger's construction."""
    refuse_unwritable_sqlite(uri)
    refuse_unreachable_server(uri)


def refuse_unwritable_sqlite(uri: str | None) -> None:
    """A local SQLite store in a folder that cannot be written (a file, read-only), or a file that is no database."""
    if uri and uri.startswith("sqlite://") and uri != "sqlite://":  # sqlite:// alone is a database in memory
        if uri.startswith("sqlite:////"):
            problem = sqlite_problem(Path(uri.removeprefix("sqlite:///").partition("?")[0]))
        else:  # absolute_sqlite made sqlite:///relative absolute
            problem = "a file takes three slashes, sqlite:///relative/file.db, or four, sqlite:////absolute/file.db"
        if problem:
            raise ValueError(
                f"trainer.logger.init_args.tracking_uri={uri}: cannot use it as the MLflow database ({problem}); "
                "give a file in a writable folder, e.g. sqlite:///logs/mlflow.db"
            )


def sqlite_problem(path: Path) -> str | None:
    """Why `path` cannot hold an SQLite database, or None. Creates its folder and an empty file, as MLflow would."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing != path and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.open("a").close()  # SQLite takes an empty file for an empty database
        with path.open("rb") as db:
            header = db.read(16)
    except OSError as err:
        return f"{err.strerror}: {err.filename or path}"
    return None if header in (b"", b"SQLite format 3\0") else f"{path} is not an SQLite database"


def refuse_unreachable_server(uri: str | None) -> None:
    """An MLflow server (http:// or https://) that does not answer as one: asked once, for at most ten seconds."""
    if uri and uri.startswith(("http://", "https://")):
        problem = server_problem(uri.rstrip("/"))
        if problem:
            raise ValueError(f"trainer.logger.init_args.tracking_uri={uri}: {problem}")


def server_problem(base: str) -> str | None:
    """Why the server at `base` is no MLflow server this run can log to, or None: MLflow's REST API answers a
    search for one experiment with JSON (its /health alone is an "OK" many servers give)."""
    fix = "start one (mlflow server --port <port>), or keep the runs in a file: sqlite:///logs/mlflow.db"
    try:
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10) as answer:
            body = answer.read(1_000_000)
    except urllib.error.HTTPError as err:
        if err.code not in (401, 403, 407):
            return f"something answers {err.code} to MLflow's API: not an MLflow server; {fix}"
        if any(os.environ.get(name) for name in CREDENTIALS):
            return None  # MLflow sends those; this probe does not
        return f"the server asks for credentials ({err.code}): set {' and '.join(CREDENTIALS[:2])}, or {CREDENTIALS[2]}"
    except OSError as err:
        return f"no MLflow server answers ({getattr(err, 'reason', err)}); {fix}"
    try:
        json.loads(body)
    except ValueError:
        return f"something answers, but not with MLflow's JSON: not an MLflow server; {fix}"
    return None


def find_run(tracking_uri: str | None, *run_dirs: Path) -> str | None:
    """The id of the MLflow run tagged with the first of these run directories that has one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for run_dir in run_dirs:
        found = client.search_runs(experiments, f"tags.`{RUN_DIR_TAG}` = '{run_dir}'", max_results=1)
        if found:
            return found[0].info.run_id
    return None
