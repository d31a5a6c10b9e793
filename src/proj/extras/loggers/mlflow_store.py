"""Where the MLflow logger keeps its runs (an MLflow tracking URI): made absolute, checked before training, and
searched for the run of a run directory that is resumed."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

RUN_DIR_TAG = "proj.run_dir"  # the MLflow tag that ties an MLflow run to its run directory


def absolute_sqlite(uri: str | None) -> str | None:
    """sqlite:///logs/mlflow.db -> sqlite:////<the working directory>/logs/mlflow.db. MLflow keeps one store per
    URI string for the whole process: a relative one would stay the database of the first working directory it
    was opened in (a second run from another folder, in the same process, wrote into the first one's)."""
    if uri and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
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
    """An MLflow server (http:// or https://) that does not answer at all: asked once, for at most ten seconds."""
    if not (uri and uri.startswith(("http://", "https://"))):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
        return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403, 407):
            return  # a server behind a login or a proxy: MLflow's own requests say more
        reason = f"something answers {err.code} to /health: not an MLflow server"
    except OSError as err:
        reason = str(getattr(err, "reason", err))
    raise ValueError(
        f"trainer.logger.init_args.tracking_uri={uri}: no MLflow server answers ({reason}); start it "
        "(mlflow server --port <port>), or keep the runs in a file: sqlite:///logs/mlflow.db"
    )


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
