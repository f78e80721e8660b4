"""Synthetic clustered collections with topic structure, for tests and benchmarks (this
project's and its users'): not part of the index, which never imports it.

Not uniform noise: a vocabulary of "term" directions, topics that prefer some terms
(Zipf-like within a topic), documents drawn from one main topic plus a few common
terms, tokens = term direction + noise, L2-normalized. Queries are built from one
target document's terms (plus topic terms and noise), so each query has a clear best
answer and a neighbourhood of related documents, like real retrieval.

    from colbert_engine.testing import clustered_collection
    data = clustered_collection(n_docs=10_000, mean_doc_len=100, dim=128, n_queries=64)
    data.doc_emb (T, dim) float32, data.doc_offsets (n+1,) int64, data.queries (nq, 32, dim)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Collection:
    doc_emb: torch.Tensor      # float32 (T, dim), unit rows
    doc_offsets: torch.Tensor  # int64 (n_docs + 1,)
    queries: torch.Tensor      # float32 (n_queries, query_len, dim), unit rows
    query_targets: torch.Tensor  # int64 (n_queries,) the document each query was drawn from
    doc_topics: torch.Tensor   # int64 (n_docs,)

    @property
    def n_docs(self) -> int:
        return self.doc_offsets.numel() - 1

    def batches(self, docs_per_batch: int):
        """Yield ``(emb, offsets)`` batches of whole documents (for streaming builds)."""
        for start in range(0, self.n_docs, docs_per_batch):
            end = min(start + docs_per_batch, self.n_docs)
            t0, t1 = int(self.doc_offsets[start]), int(self.doc_offsets[end])
            yield self.doc_emb[t0:t1], self.doc_offsets[start:end + 1] - t0


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def clustered_collection(n_docs: int = 1000, mean_doc_len: int = 64, dim: int = 128, n_queries: int = 16,
                         query_len: int = 32, n_topics: int | None = None, n_terms: int | None = None,
                         terms_per_topic: int = 64, noise: float = 0.35, seed: int = 0,
                         min_doc_len: int = 1) -> Collection:
    """A clustered collection (see module docstring). Deterministic for a given seed.

    Doc lengths are uniform in [mean/2, 3*mean/2] (at least ``min_doc_len``). A token is
    its term's unit direction plus a Gaussian noise vector of norm about ``2 * noise``,
    renormalized: the default 0.35 leaves a token at cosine ~0.82 from its term (contextual
    vectors spread around a word type).
    """
    gen = torch.Generator().manual_seed(seed)
    n_topics = n_topics or max(4, n_docs // 50)
    n_terms = n_terms or max(256, 8 * n_topics)
    terms = _unit(torch.randn(n_terms, dim, generator=gen))
    topic_terms = torch.randint(0, n_terms, (n_topics, terms_per_topic), generator=gen)
    zipf = 1.0 / torch.arange(1, terms_per_topic + 1, dtype=torch.float32)
    common = torch.arange(min(32, n_terms))  # frequent terms shared by every topic

    lengths = torch.randint(max(min_doc_len, mean_doc_len // 2), max(min_doc_len, 3 * mean_doc_len // 2) + 1,
                            (n_docs,), generator=gen)
    offsets = torch.zeros(n_docs + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    total = int(offsets[-1])
    doc_topics = torch.randint(0, n_topics, (n_docs,), generator=gen)
    token_topic = torch.repeat_interleave(doc_topics, lengths)
    # 80% topic terms (Zipf within the topic), 20% common terms
    rank = torch.multinomial(zipf, total, replacement=True, generator=gen)
    token_term = topic_terms[token_topic, rank]
    is_common = torch.rand(total, generator=gen) < 0.2
    token_term[is_common] = common[torch.randint(0, common.numel(), (int(is_common.sum()),), generator=gen)]
    doc_emb = _unit(terms[token_term] + noise * torch.randn(total, dim, generator=gen) / dim ** 0.5 * 2)

    targets = torch.randint(0, n_docs, (n_queries,), generator=gen)
    queries = torch.empty(n_queries, query_len, dim)
    for q, doc in enumerate(targets.tolist()):
        t0, t1 = int(offsets[doc]), int(offsets[doc + 1])
        doc_terms = token_term[t0:t1]
        # about half the query tokens echo the target's terms, the rest its topic's
        picks = doc_terms[torch.randint(0, doc_terms.numel(), (query_len,), generator=gen)]
        topical = topic_terms[doc_topics[doc], torch.multinomial(zipf, query_len, replacement=True, generator=gen)]
        use_topic = torch.rand(query_len, generator=gen) < 0.5
        picks = torch.where(use_topic, topical, picks)
        queries[q] = _unit(terms[picks] + noise * torch.randn(query_len, dim, generator=gen) / dim ** 0.5 * 2)
    return Collection(doc_emb, offsets, queries, targets, doc_topics)
