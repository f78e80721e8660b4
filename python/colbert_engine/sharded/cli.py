"""``colbert-engine index --shards N [--ray ADDRESS]``: the sharded branch of the CLI's build."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace


def build_sharded_index(args, staging, open_records, model: str, encoder, batches):
    """Build a sharded index in ``staging`` from the CLI's parsed ``args``. Without ``--ray``
    the documents are encoded here (the CLI's own encoder and progress bar); with it, by
    encoder actors on Ray. ``batches``: the CLI's encoded batches (used without Ray). Returns the opened index and an object whose ``tokens`` is the
    number of tokens indexed."""
    from colbert_engine.cli import CliError, encoder_config, load_encoder
    from colbert_engine.sharded import ShardedIndex

    n_shards = 1 if args.shards is None else args.shards
    if n_shards < 1:
        raise CliError(f"--shards: expected an int >= 1, got {n_shards}")
    try:
        if args.ray:
            factory = functools.partial(load_encoder, model, device=args.device, dim=args.dim)
            index = ShardedIndex.build_from_text(staging, open_records(), factory, n_shards=n_shards, nbits=args.nbits,
                                                 device=args.device, chunk_docs=args.chunk_docs,
                                                 batch_size=args.batch_size, store_text=not args.no_store_text,
                                                 ray=args.ray, quiet=args.quiet)
        else:
            index = ShardedIndex.build(staging, batches, n_shards=n_shards, nbits=args.nbits, device=args.device)
    except ImportError as exc:
        raise CliError(f"--ray: {exc}") from None
    # each shard is an ordinary index: let `search` on one shard alone find its encoder too
    config = json.dumps(encoder_config(model, encoder), indent=2) + "\n"
    for name in index.shard_names:
        (staging / name / "encoder.json").write_text(config)
    return index, SimpleNamespace(tokens=index.n_tokens)
