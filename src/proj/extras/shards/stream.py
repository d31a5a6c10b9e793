"""One split of the shards as a stream of batches: shuffled, split across ranks, read by workers, resumable.

The order of an epoch is a pure function of (seed, epoch), so every rank computes the same one without talking:

1. the shards are permuted (training), and their rows laid end to end: positions 0 .. N-1;
2. rank r takes the contiguous positions [r * n, (r + 1) * n), n = ceil(N / world_size), wrapping around as
   torch's DistributedSampler pads: with N a multiple of world_size every sample is seen exactly once, and every
   rank has the same number of batches (DDP needs that). A rank reads only the shards its block covers: adding
   machines shares the data instead of copying it;
3. a rank's block is cut into windows of `window` samples (a whole number of batches), each permuted (training)
   and cut into batches. Window k is read by worker k mod num_workers: a worker reads only its windows' shards.

Resuming mid-epoch: the loader's state is (epoch, batches handed out). Which of its batches each worker has
handed out follows from the DataLoader's round-robin over workers, so each worker skips those without reading
them, and the rest of the epoch is the batches an uninterrupted run draws. Per-sample augmentation draws from a
generator seeded per batch, so a skipped batch shifts nothing either. Memory: a worker holds one window's
encoded samples and the shards they come from, whatever the dataset's size.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from proj.data.errors import DataError
from proj.data.image_files import PIL_ERRORS
from proj.data.sampling import ResumableLoader, epoch_generator
from proj.extras.shards.index import join

Decode = Callable[[Any, Any], tuple[Tensor, Tensor]]


class ShardStream(IterableDataset):
    def __init__(
        self,
        url: str,
        shards: list[dict[str, Any]],
        decode: Decode,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        window: int = 1024,
    ) -> None:
        """shards: [{"file": path relative to url, "rows": n}, ...] in their written order."""
        self.url, self.files = url, [s["file"] for s in shards]
        self.rows = np.array([s["rows"] for s in shards], dtype=np.int64)
        self.decode, self.batch_size, self.shuffle, self.seed = decode, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.window = max(1, window // batch_size) * batch_size  # whole batches (window_size: per worker count)
        self.total = int(self.rows.sum())
        self.per_rank = math.ceil(self.total / world_size)
        self.epoch, self.consumed = 0, 0  # set by StreamLoader before its workers start
        self.cache: dict[int, Any] = {}  # shard -> its table: the current window's

    def __len__(self) -> int:
        """Batches per epoch, the same on every rank."""
        return math.ceil(self.per_rank / self.batch_size)

    # --- the order of an epoch -----------------------------------------------------------------------------

    def layout(self) -> tuple[np.ndarray, np.ndarray]:
        """The shards in this epoch's order and the position where each starts."""
        order = np.arange(len(self.files))
        if self.shuffle:
            order = torch.randperm(len(order), generator=epoch_generator(self.seed, self.epoch)).numpy()
        return order, np.concatenate([[0], np.cumsum(self.rows[order])])

    def window_size(self, workers: int) -> int:
        """`window` samples, or fewer so that every worker gets a window (a small split would leave some idle)."""
        batches = max(1, min(self.window // self.batch_size, math.ceil(len(self) / workers)))
        return batches * self.batch_size

    def windows(self, workers: int = 1) -> list[tuple[int, int]]:
        """This rank's windows, as ranges of its positions."""
        size = self.window_size(workers)
        return [(a, min(a + size, self.per_rank)) for a in range(0, self.per_rank, size)]

    def window_rows(self, k: int, start: int, stop: int) -> list[tuple[int, int]]:
        """(shard, row) of each sample of window k, in the order its batches take them."""
        order, starts = self.layout()
        positions = (self.rank * self.per_rank + np.arange(start, stop)) % self.total
        slot = np.searchsorted(starts, positions, side="right") - 1
        pairs = list(zip(order[slot].tolist(), (positions - starts[slot]).tolist(), strict=True))
        if self.shuffle:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, self.rank, k)) % 2**63)
            pairs = [pairs[i] for i in torch.randperm(len(pairs), generator=g).tolist()]
        return pairs

    # --- reading -------------------------------------------------------------------------------------------

    def tables(self, shards: set[int]) -> dict[int, Any]:
        """The shards a window needs, read once: those the previous window already read are kept, the rest
        dropped (a window's shards are all a worker holds)."""
        kept = {s: t for s, t in self.cache.items() if s in shards}
        for shard in sorted(shards - kept.keys()):
            with fsspec.open(join(self.url, self.files[shard]), "rb") as f:
                kept[shard] = pq.read_table(f, columns=["x", "y"])
        self.cache = kept
        return kept

    def samples(self, pairs: list[tuple[int, int]], tables: dict[int, Any]) -> list[tuple[Any, Any]]:
        """The encoded samples at (shard, row) pairs."""
        found: dict[tuple[int, int], tuple[Any, Any]] = {}
        for shard in dict.fromkeys(s for s, _ in pairs):
            rows = sorted({r for s, r in pairs if s == shard})
            xs, ys = (tables[shard].column(c).take(rows).to_pylist() for c in ("x", "y"))
            found.update({(shard, r): (x, y) for r, x, y in zip(rows, xs, ys, strict=True)})
        return [found[p] for p in pairs]

    def batch(self, pairs: list[tuple[int, int]], tables: dict[int, Any], index: int) -> tuple[Tensor, Tensor]:
        # Per-sample augmentation draws from the global RNG: seeded per batch (and restored after), so that a
        # batch is the same whichever worker makes it, and skipping batches on resume shifts no other draw.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, self.epoch, self.rank, index)) % 2**63)
            encoded = zip(self.samples(pairs, tables), pairs, strict=True)
            xs, ys = zip(*(self.decoded(x, y, at) for (x, y), at in encoded), strict=True)
        return torch.stack(xs), torch.stack(ys)

    def decoded(self, x: Any, y: Any, at: tuple[int, int]) -> tuple[Tensor, Tensor]:
        try:
            return self.decode(x, y)
        except PIL_ERRORS as err:
            shard, row = at
            raise DataError(
                f"{join(self.url, self.files[shard])} row {row} cannot be decoded ({err}): write the shards again"
            ) from None

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        if info is not None:  # a worker process: give freed Arrow memory back to the system (Arrow's default pool,
            # mimalloc, keeps it: a worker grew by about 70 MB over a 50,000-image epoch, benchmarks/data_scale.py)
            with contextlib.suppress(NotImplementedError):
                pa.set_memory_pool(pa.jemalloc_memory_pool())
        windows = self.windows(workers)
        counts = [sum(self.batches_in(windows[k]) for k in range(w, len(windows), workers)) for w in range(workers)]
        # A fresh loader asks its worker 0 first: on a resume, worker 0 takes the role of the worker the
        # uninterrupted loader would have asked next, so that the batches keep their order.
        taken, turn = handed_out(counts, self.consumed)
        role = (worker + turn) % workers
        skip, seen = taken[role], 0
        for k in range(role, len(windows), workers):
            start, stop = windows[k]
            n = self.batches_in(windows[k])
            if seen + n <= skip:  # handed out before the resume: not even read
                seen += n
                continue
            pairs = self.window_rows(k, start, stop)
            tables = self.tables({shard for shard, _ in pairs})
            first = start // self.batch_size  # the window's first batch of this rank's epoch
            for j in range(n):
                seen += 1
                if seen > skip:
                    part = pairs[j * self.batch_size : (j + 1) * self.batch_size]
                    yield self.batch(part, tables, first + j)

    def stack(self, limit: int | None = None) -> tuple[Tensor, Tensor]:
        """The stream's first `limit` samples (all by default) as two tensors (what export checks a model on)."""
        xs, ys, n = [], [], 0
        for x, y in self:
            xs.append(x), ys.append(y)
            n += len(y)
            if limit is not None and n >= limit:
                break
        return torch.cat(xs)[:limit], torch.cat(ys)[:limit]

    def batches_in(self, window: tuple[int, int]) -> int:
        return math.ceil((window[1] - window[0]) / self.batch_size)


def handed_out(counts: list[int], consumed: int) -> tuple[list[int], int]:
    """How many batches of each worker a DataLoader has handed out after `consumed`, and which worker it asks
    next: it takes one from each worker in turn, passing over the workers that have none left."""
    taken = [0] * len(counts)
    worker = 0
    for _ in range(min(consumed, sum(counts))):
        while taken[worker] >= counts[worker]:
            worker = (worker + 1) % len(counts)
        taken[worker] += 1
        worker = (worker + 1) % len(counts)
    return taken, worker


class StreamLoader(ResumableLoader):
    """The DataLoader of a ShardStream (which makes its own batches): it tells the stream the epoch and, on a
    resume, the batches already handed out, before the workers start."""

    def __init__(self, dataset: ShardStream, epoch_of: Callable[[], int] = lambda: 0, **kwargs: Any) -> None:
        kwargs.update(batch_size=None, persistent_workers=False)  # workers must see each epoch's settings
        super().__init__(dataset, **kwargs)
        self.epoch_of = epoch_of

    def __iter__(self) -> Iterator[Any]:
        self._epoch = self.epoch_of()
        epoch, skip = getattr(self, "_resume", (None, 0))
        self._resume = (None, 0)
        self.dataset.epoch, self.dataset.consumed = self._epoch, skip if epoch == self._epoch else 0
        self._yielded = self.dataset.consumed
        for batch in DataLoader.__iter__(self):
            self._yielded += 1
            yield batch
