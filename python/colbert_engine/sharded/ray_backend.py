"""The Ray side of sharded indexes (``pip install 'colbert-engine[distributed]'``).

Ray is imported only here and only when asked for. On a cluster the index folder must be on
storage every node sees under the same path (the spool and the shards are written there).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np


def ensure_ray(address):
    """The ``ray`` module, connected: an already initialised Ray is used as it is; else
    ``True``/``"local"`` starts a local instance and any other string joins that cluster."""
    try:
        import ray
    except ImportError:
        raise ImportError("ray is not installed; install the extra: pip install 'colbert-engine[distributed]'") from None
    if not ray.is_initialized():
        if address is True or address in ("local", "auto-local"):
            ray.init(include_dashboard=False)
        else:
            ray.init(address=str(address))
    return ray


def _gpu_count(ray) -> int:
    return int(ray.cluster_resources().get("GPU", 0))


class _SpoolVectors:
    """map_batches function for parts that already hold vectors."""

    encoder = None
    batch_size = 32

    def __init__(self, spool: str, n_shards: int):
        self.spool, self.n_shards = Path(spool), n_shards

    def __call__(self, batch: dict) -> dict:
        from colbert_engine.sharded.build import spool_part

        out = [spool_part(self.spool, int(part), pickle.loads(payload), self.n_shards, self.encoder, self.batch_size)
               for part, payload in zip(batch["part"], batch["payload"])]
        return {"summary": np.array([pickle.dumps(s) for s in out], dtype=object)}


class _EncodeAndSpool(_SpoolVectors):
    """Encoder actor: loads the encoder once (on its GPU when it was given one), then
    encodes and spools text parts."""

    def __init__(self, spool: str, n_shards: int, encoder_factory, batch_size: int):
        super().__init__(spool, n_shards)
        self.encoder = encoder_factory()
        self.batch_size = batch_size


def spool_parts(address, spool: Path, parts, n_shards: int, encoder_factory, batch_size: int, workers, window_parts: int,
                quiet: bool) -> list:
    """Step 1 on Ray: each window of parts becomes a Ray Dataset; ``map_batches`` spools it
    (text through a pool of encoder actors, one per GPU or ``workers`` CPU actors)."""
    import itertools

    from tqdm import tqdm

    ray = ensure_ray(address)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not quiet
    gpus = _gpu_count(ray)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    summaries = []
    parts = enumerate(parts)
    with tqdm(desc="spooling", unit="part", disable=quiet) as bar:
        while True:
            window = list(itertools.islice(parts, window_parts))
            if not window:
                break
            items = [{"part": i, "payload": pickle.dumps(payload)} for i, payload in window]
            ds = ray.data.from_items(items, override_num_blocks=min(len(items), 4 * cpus))
            text = "texts" in window[0][1]
            if text:
                if encoder_factory is None:
                    raise ValueError("encoder: required to build from text")
                pool = gpus if gpus else (workers or cpus)
                ds = ds.map_batches(_EncodeAndSpool, fn_constructor_args=(str(spool), n_shards, encoder_factory,
                                                                          batch_size),
                                    batch_size=1, batch_format="numpy", concurrency=max(1, min(pool, len(items))),
                                    num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
            else:
                ds = ds.map_batches(_SpoolVectors(str(spool), n_shards), batch_size=1, batch_format="numpy",
                                    num_cpus=1)
            for row in ds.iter_rows():
                summaries.append(pickle.loads(row["summary"]))
                bar.update(1)
    return summaries


def write_shards(address, folder: Path, n_shards: int, part_ids: list, codec, nbits: int, quiet: bool) -> list:
    """Step 3 on Ray: one task per shard (compression and the shard's files)."""
    from tqdm import tqdm

    from colbert_engine.sharded.build import write_shard

    ray = ensure_ray(address)
    task = ray.remote(num_cpus=1, max_retries=1)(write_shard)
    codec_ref = ray.put(codec)
    pending = {task.remote(folder, s, part_ids, codec_ref, nbits): s for s in range(n_shards)}
    results = {}
    with tqdm(total=n_shards, desc="shards", unit="shard", disable=quiet) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            shard = pending.pop(done[0])
            try:
                results[shard] = ray.get(done[0])
            except ray.exceptions.RayError as err:
                raise RuntimeError(f"{folder}/shard-{shard:04d}: building the shard failed: {err}") from None
            bar.update(1)
    return [results[s] for s in range(n_shards)]


# ------------------------------------------------------------------------- search

class ShardActor:
    """Holds one shard open in a Ray worker and runs :class:`Index` methods on it."""

    def __init__(self, path: str, device, verify: bool):
        from colbert_engine.index import Index

        self.index = Index.open(path, device=device, verify=verify)

    def call(self, method, args: tuple, kwargs: dict):
        from colbert_engine.sharded.index import _invoke

        return _invoke(self.index, method, args, kwargs)

    def pid(self) -> int:
        return os.getpid()


def start_shard_actors(address, paths: list, device, verify: bool, actor_options: dict | None):
    ray = ensure_ray(address)
    options = {"max_restarts": 2, "max_task_retries": 0, "num_cpus": 0}
    options.update(actor_options or {})
    cls = ray.remote(**options)(ShardActor)
    return ray, [cls.remote(str(p), None if device is None else str(device), verify) for p in paths]
