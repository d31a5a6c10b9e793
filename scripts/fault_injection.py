"""Kill -9 a short training run at seeded random points, resume it, and check that nothing was lost.

    python scripts/fault_injection.py [--runs 20] [--seed 0] [--workdir DIR]

Each point is a SIGKILL at a random (epoch, batch) of a 3-epoch run, or inside one of its checkpoint saves:
before the file is written, after its temporary file is written, or right after it is renamed into place (before
ModelCheckpoint links last.ckpt to it). Half of the save points freeze the best score from some epoch on, so
that last.ckpt is written as a file over its link. After each kill, a complete last.ckpt must exist (unless the
kill came before epoch 0's checkpoints were complete: then the run is started again), and `fit --resume` must
reach the same final weights, bitwise, as an uninterrupted run. Prints one row per point and a summary; exits 1
on a failure. The helpers that kill (KillAt, KillInSave, FreezeBest) live in tests/helpers.py. A point takes
two processes (the killed run and its resume), about a minute on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the run, its launcher and the killing callbacks are the tests' own
from helpers import RUN, RUN_DIR, proj  # noqa: E402

EPOCHS, BATCHES, SAVES = 3, 6, 3  # one checkpoint save an epoch: a new best, or last.ckpt as a file


def callback(class_path: str, **init_args: object) -> str:
    return f"--trainer.callbacks+={json.dumps({'class_path': class_path, 'init_args': init_args})}"


def kill_points(runs: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    points = []
    for _ in range(runs):
        if rng.random() < 0.5:
            points.append({"kind": "batch", "epoch": rng.randrange(EPOCHS), "batch": rng.randrange(BATCHES)})
        else:
            freeze = rng.choice([None, 1, 2])  # from this epoch on no new best: last.ckpt is written as a file
            phase = rng.choice(["before", "written", "renamed"])
            points.append({"kind": "save", "nth": rng.randint(1, SAVES), "phase": phase, "freeze": freeze})
    return points


def arguments(point: dict) -> list[str]:
    if point["kind"] == "batch":
        return [callback("helpers.KillAt", epoch=point["epoch"], batch=point["batch"], signal="SIGKILL")]
    writer = {"class_path": "helpers.KillInSave", "init_args": {"nth": point["nth"], "phase": point["phase"]}}
    args = [f"--trainer.plugins=[{json.dumps(writer)}]"]
    if point["freeze"] is not None:
        args.append(callback("helpers.FreezeBest", epoch=point["freeze"]))
    return args


def describe(point: dict) -> str:
    if point["kind"] == "batch":
        return f"epoch {point['epoch']} batch {point['batch']}"
    freeze = f", no new best from epoch {point['freeze']}" if point["freeze"] is not None else ""
    return f"save #{point['nth']} {point['phase']}{freeze}"


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run_point(workdir: Path, point: dict, straight: dict[str, torch.Tensor]) -> dict:
    workdir.mkdir(parents=True)
    killed = proj(workdir, *RUN, *arguments(point))
    marker = workdir / "killed.marker"
    row = {"point": describe(point), "exit": killed.returncode, "where": marker.read_text() if marker.exists() else ""}
    last = workdir / RUN_DIR / "checkpoints/last.ckpt"
    if killed.returncode != -9:
        row.update(last="-", resumed="-", ok=killed.returncode == 0 and equal(weights(last), straight), note="no kill")
        return row
    if last.exists():
        try:
            row["last"] = f"epoch {torch.load(last, weights_only=True)['epoch']}"
        except Exception as err:  # a truncated or missing file behind a link: the failure this script hunts
            row.update(last=f"broken: {type(err).__name__}", resumed="-", ok=False, note="")
            return row
        again = proj(workdir, "fit", "--resume", str(RUN_DIR))
    elif point["epoch"] > 0 if point["kind"] == "batch" else "epoch 0" not in row["where"]:
        row.update(last="MISSING", resumed="-", ok=False, note="")  # epoch 0's last.ckpt was made: it was lost
        return row
    else:  # killed before epoch 0's checkpoints were complete: nothing to resume, the run starts again
        row["last"] = "none yet"
        shutil.rmtree(workdir / "logs")
        again = proj(workdir, *RUN, *arguments(point))
    row["resumed"] = again.returncode
    extra = sorted(p.name for p in last.parent.glob("last-v*"))
    row["ok"] = again.returncode == 0 and not extra and equal(weights(last), straight)
    if not row["ok"]:
        row["note"] = " ".join(extra) or (again.stderr.strip().splitlines() or [""])[-1][:80]
    else:
        row["note"] = ""
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="run the seeded points from this index on")
    parser.add_argument("--workdir", type=Path, default=None, help="kept if given; a temporary folder otherwise")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fault_injection_"))
    (workdir / "straight").mkdir(parents=True)
    done = proj(workdir / "straight", *RUN)
    if done.returncode != 0:
        print(done.stderr[-3000:])
        return 1
    straight = weights(workdir / "straight" / RUN_DIR / "checkpoints/last.ckpt")
    header = f"{'#':>2}  {'kill point':<42} {'exit':>4}  {'last.ckpt after':<16} {'resume':>6}  {'bitwise':<7}  note"
    print(header, flush=True)
    rows = []
    for i, point in list(enumerate(kill_points(args.runs, args.seed)))[args.start :]:
        row = run_point(workdir / f"point_{i:02d}", point, straight)
        rows.append(row)
        print(
            f"{i:>2}  {row['point']:<42} {row['exit']:>4}  {row['last']:<16} {row['resumed']!s:>6}  "
            f"{'yes' if row['ok'] else 'NO':<7}  {row['note'] or row['where']}",
            flush=True,
        )
    killed = [r for r in rows if r["exit"] == -9]
    print(
        f"\n{len(rows)} points (seed {args.seed}): {len(killed)} killed, {len(rows) - len(killed)} not reached; "
        f"{sum(r['last'].startswith('epoch') for r in killed)} left a complete last.ckpt, "
        f"{sum(r['last'] == 'none yet' for r in killed)} came before epoch 0's checkpoints were complete; "
        f"{sum(r['ok'] for r in rows)}/{len(rows)} reached the uninterrupted run's weights bitwise."
    )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
