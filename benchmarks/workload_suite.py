"""A family of workloads for search quality and latency, instead of one.

Synthetic members come from :func:`generate`, which varies what makes late-interaction
retrieval hard on real embeddings, one knob at a time:

- ``anisotropy``: token vectors live in a cone (a shared mean direction) with a decaying
  eigen-spectrum, as trained encoders' vectors do; centroid scores bunch together.
- ``stop_share`` / ``n_stop``: a share of every document's (and query's) tokens comes from
  a few stop-word-like directions, whose inverted lists hold most documents; ``zipf`` skews
  term frequencies inside topics (posting-list skew).
- ``noise`` / ``query_noise``: token noise in documents and queries.
- ``len_sigma``, ``min_len`` .. ``max_len``: log-normal document lengths (10 to 2,000).
- ``near_dup``: a share of documents are noisy copies of others (many near-ties).
- ``n_docs`` x ``mean_len``: 300 documents to 1M tokens.

Real members: Vaswani and XQuAD-R (English) encoded with all-MiniLM-L6-v2
(:mod:`workload_real`, cached on disk).

    PYTHONPATH=python python benchmarks/workload_suite.py --list
    PYTHONPATH=python python benchmarks/bench_search_quality.py  # runs the suite
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, replace

import torch


@dataclass(frozen=True)
class Spec:
    name: str
    n_docs: int
    mean_len: int = 100
    len_sigma: float = 0.0
    min_len: int = 10
    max_len: int = 2000
    dim: int = 128
    anisotropy: float = 0.0
    stop_share: float = 0.0
    n_stop: int = 24
    zipf: float = 1.0
    noise: float = 0.35
    query_noise: float = 0.35
    near_dup: float = 0.0
    # 250: at 50, one hit of a top 10 is 0.002 and two codecs of equal error read up to
    # ±0.01 apart at 2 bits, the width of the margin.
    n_queries: int = 250
    query_len: int = 32
    seed: int = 0


MEMBERS = {
    spec.name: spec for spec in [
        Spec("small-300", n_docs=300, mean_len=60),
        Spec("base-3k", n_docs=3_000, mean_len=100),
        Spec("aniso-stop-3k", n_docs=3_000, mean_len=100, anisotropy=1.0, stop_share=0.12, zipf=1.2,
             query_noise=0.5),
        Spec("long-docs", n_docs=800, mean_len=250, len_sigma=1.0, min_len=10, max_len=2000),
        Spec("near-dup-3k", n_docs=3_000, mean_len=80, near_dup=0.3),
        Spec("noisy-3k", n_docs=3_000, mean_len=100, noise=0.6, query_noise=0.7),
        Spec("hard-1m", n_docs=10_000, mean_len=100, len_sigma=0.5, anisotropy=1.0, stop_share=0.1, zipf=1.2,
             query_noise=0.5),
    ]
}
REAL = ("xquad-en", "vaswani")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def generate(spec: Spec) -> dict:
    """``doc_emb (T, dim)`` fp32 unit rows, ``doc_offsets (n + 1,)`` int64, ``queries (nq,
    query_len, dim)`` fp32 unit rows, ``targets (nq,)`` the document each query came from."""
    gen = torch.Generator().manual_seed(spec.seed)
    dim = spec.dim
    # The space: a decaying spectrum and a shared mean direction (0 = isotropic).
    scale = (torch.arange(dim, dtype=torch.float32) + 1) ** (-spec.anisotropy / 2)
    scale = scale / scale.norm() * math.sqrt(dim)
    mean_dir = _unit(torch.randn(dim, generator=gen))
    bias = 1.5 * spec.anisotropy

    def directions(n):
        return _unit(torch.randn(n, dim, generator=gen) * scale + bias * mean_dir)

    # Lengths.
    if spec.len_sigma > 0:
        mu = math.log(spec.mean_len) - spec.len_sigma ** 2 / 2
        lengths = torch.exp(mu + spec.len_sigma * torch.randn(spec.n_docs, generator=gen))
    else:
        lengths = spec.mean_len * (0.5 + torch.rand(spec.n_docs, generator=gen))
    lengths = lengths.round().long().clamp(spec.min_len, spec.max_len)
    offsets = torch.zeros(spec.n_docs + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    n_tokens = int(offsets[-1])
    # Vocabulary, topics with Zipf term ranks, stop words.
    n_terms = max(2_000, int(6 * math.sqrt(n_tokens) * 4))
    terms = directions(n_terms)
    stops = directions(spec.n_stop)
    n_topics = max(8, spec.n_docs // 40)
    per_topic = 256
    topic_terms = torch.randint(0, n_terms, (n_topics, per_topic), generator=gen)
    rank_weights = (torch.arange(per_topic, dtype=torch.float32) + 1) ** -spec.zipf
    stop_weights = (torch.arange(spec.n_stop, dtype=torch.float32) + 1) ** -1.0
    doc_topic = torch.randint(0, n_topics, (spec.n_docs,), generator=gen)
    token_doc = torch.repeat_interleave(torch.arange(spec.n_docs), lengths)

    def tokens_of(topic_per_token, noise):
        n = topic_per_token.numel()
        ranks = torch.multinomial(rank_weights, n, replacement=True, generator=gen)
        term = topic_terms[topic_per_token, ranks]
        # One token in ten from anywhere in the vocabulary.
        stray = torch.rand(n, generator=gen) < 0.1
        term[stray] = torch.randint(0, n_terms, (int(stray.sum()),), generator=gen)
        base = terms[term]
        is_stop = torch.rand(n, generator=gen) < spec.stop_share
        base[is_stop] = stops[torch.multinomial(stop_weights, int(is_stop.sum()), replacement=True, generator=gen)] \
            if is_stop.any() else base[is_stop]
        return _unit(base + noise * torch.randn(n, dim, generator=gen) * scale / math.sqrt(dim))

    emb = tokens_of(doc_topic[token_doc], spec.noise)
    # Near duplicates: a document re-made from another one's tokens, lightly perturbed.
    if spec.near_dup > 0:
        n_dup = int(spec.near_dup * spec.n_docs)
        copies = torch.randperm(spec.n_docs, generator=gen)[:n_dup]
        sources = torch.randint(0, spec.n_docs, (n_dup,), generator=gen)
        for doc, src in zip(copies.tolist(), sources.tolist()):
            t0, t1 = int(offsets[doc]), int(offsets[doc + 1])
            s0, s1 = int(offsets[src]), int(offsets[src + 1])
            picks = s0 + torch.randint(0, s1 - s0, (t1 - t0,), generator=gen)
            emb[t0:t1] = _unit(emb[picks] + 0.1 * torch.randn(t1 - t0, dim, generator=gen) / math.sqrt(dim))
    # Queries: tokens of a target document (and its topic, and stop words), with noise.
    targets = torch.randint(0, spec.n_docs, (spec.n_queries,), generator=gen)
    queries = torch.empty(spec.n_queries, spec.query_len, dim)
    for q, doc in enumerate(targets.tolist()):
        t0, t1 = int(offsets[doc]), int(offsets[doc + 1])
        n_own = spec.query_len * 3 // 4
        own = emb[t0 + torch.randint(0, t1 - t0, (n_own,), generator=gen)]
        topical = tokens_of(doc_topic[doc].repeat(spec.query_len - n_own), spec.noise)
        picked = torch.cat([own, topical])
        queries[q] = _unit(picked + spec.query_noise * torch.randn(spec.query_len, dim, generator=gen) * scale
                           / math.sqrt(dim))
    return {"doc_emb": emb.contiguous(), "doc_offsets": offsets, "queries": queries, "targets": targets}


def load_member(name: str, **overrides) -> dict:
    """A member's vectors by name (synthetic or real)."""
    if name in REAL:
        from workload_real import load

        return load(name)
    return generate(replace(MEMBERS[name], **overrides))


def describe(name: str, data: dict) -> str:
    n_docs = data["doc_offsets"].numel() - 1
    lengths = torch.diff(data["doc_offsets"])
    return (f"{name}: {n_docs:,} docs, {int(lengths.sum()):,} tokens (len {int(lengths.min())}-{int(lengths.max())}),"
            f" dim {data['doc_emb'].shape[1]}, {data['queries'].shape[0]} queries")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="generate every synthetic member and describe it")
    args = parser.parse_args(argv)
    for name, spec in MEMBERS.items():
        print(asdict(spec))
        if args.list:
            print("  ", describe(name, generate(spec)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
