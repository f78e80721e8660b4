"""PLAID candidate generation and centroid interaction on CPU: kernels vs the torch reference.

Synthetic clustered collection: K = 2^14 unit centroids grouped into topics, ~10k documents of
~100 tokens (~1M tokens) whose codes are drawn from topic mixtures (so cells are far from
uniform), 32-token queries near a few topics' centroids. Per query, the funnel's centroid
stages with PLAID's k <= 10 settings (nprobe 1, t_cs 0.5, ndocs 256, stage 3 keeps 64) and
its k > 100 settings (nprobe 4, t_cs 0.4, ndocs 4096, stage 3 keeps 1024).

    PYTHONPATH=python python benchmarks/bench_plaid.py            # table for RESULTS.md
    PYTHONPATH=python python -m pytest benchmarks/bench_plaid.py  # pytest-benchmark

Ratios are measured in the same run; absolute times on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytest
import torch

from colbert_engine import ops
from colbert_engine.index.segment import build_ivf
from colbert_engine.ops import plaid, reference

N_CENTROIDS = 2**14
N_TOPICS = 128
N_COMMON = 256
COMMON_FRACTION = 0.2
N_DOCS = 10_000
DIM = 128
QUERY_LEN = 32
SETTINGS = {  # name: (nprobe, t_cs, ndocs); stage 3 keeps ndocs // 4 (DESIGN.md section 5)
    "k<=10": (1, 0.5, 256),
    "k>100": (4, 0.4, 4096),
}


def make_collection(seed=0):
    """Centroids, packed doc codes + offsets, inverted lists, and a query sampler.

    Topic t owns a random set of centroids near its center; a few hundred "common" centroids
    (function words, punctuation-like tokens) take a fifth of every document's tokens and a
    quarter of the query tokens, which is what makes real candidate sets large.
    """
    gen = torch.Generator().manual_seed(seed)
    topics = torch.nn.functional.normalize(torch.randn(N_TOPICS, DIM, generator=gen), dim=1)
    centroid_topic = torch.randint(0, N_TOPICS, (N_CENTROIDS,), generator=gen)
    centroids = torch.nn.functional.normalize(
        topics[centroid_topic] + 0.08 * torch.randn(N_CENTROIDS, DIM, generator=gen), dim=1)
    # Zipf-like popularity of centroids within each topic.
    popularity = 1.0 / (1.0 + torch.rand(N_CENTROIDS, generator=gen) * 20)
    by_topic = [torch.nonzero(centroid_topic == t).flatten() for t in range(N_TOPICS)]
    common = torch.randperm(N_CENTROIDS, generator=gen)[:N_COMMON]

    lengths = torch.randint(20, 181, (N_DOCS,), generator=gen)  # mean 100 -> ~1M tokens
    doc_offsets = torch.zeros(N_DOCS + 1, dtype=torch.int64)
    doc_offsets[1:] = torch.cumsum(lengths, 0)
    doc_topics = torch.randint(0, N_TOPICS, (N_DOCS, 3), generator=gen)  # a mixture of 3 topics
    mixture = torch.softmax(torch.randn(N_DOCS, 3, generator=gen) * 1.5, dim=1)
    owner = torch.repeat_interleave(torch.arange(N_DOCS), lengths)
    token_topic = doc_topics[owner, torch.multinomial(mixture[owner], 1, generator=gen).flatten()]
    doc_codes = torch.empty(owner.numel(), dtype=torch.int32)
    for t in range(N_TOPICS):
        where = torch.nonzero(token_topic == t).flatten()
        cells = by_topic[t]
        if where.numel() and cells.numel():
            pick = torch.multinomial(popularity[cells], where.numel(), replacement=True, generator=gen)
            doc_codes[where] = cells[pick].to(torch.int32)
    is_common = torch.rand(owner.numel(), generator=gen) < COMMON_FRACTION
    pick = torch.multinomial(popularity[common], int(is_common.sum()), replacement=True, generator=gen)
    doc_codes[is_common] = common[pick].to(torch.int32)
    ivf, ivf_offsets = (torch.from_numpy(a) for a in build_ivf(doc_codes.numpy(), doc_offsets.numpy(), N_CENTROIDS))

    def queries(n, query_seed=1):
        qgen = torch.Generator().manual_seed(query_seed)
        q_topics = torch.randint(0, N_TOPICS, (n, 2), generator=qgen)
        which = q_topics[torch.arange(n)[:, None], torch.randint(0, 2, (n, QUERY_LEN), generator=qgen)]
        near = torch.stack([by_topic[int(t)][torch.randint(0, len(by_topic[int(t)]), (1,), generator=qgen)]
                            for t in which.flatten()]).view(n, QUERY_LEN)
        to_common = torch.rand(n, QUERY_LEN, generator=qgen) < 0.25
        near[to_common] = common[torch.randint(0, N_COMMON, (int(to_common.sum()),), generator=qgen)]
        return torch.nn.functional.normalize(
            centroids[near] + 0.06 * torch.randn(n, QUERY_LEN, DIM, generator=qgen), dim=2)

    return centroids, doc_codes, doc_offsets, ivf, ivf_offsets, queries


def funnel_kernels(scores, collection, nprobe, t_cs, ndocs):
    """The op path: stage 1, stage 2 (pruned), stage 3 on the survivors, one query."""
    _, doc_codes, doc_offsets, ivf, ivf_offsets, _ = collection
    cands = ops.candidates(scores, ivf, ivf_offsets, nprobe, N_DOCS)
    _, survivors = ops.centroid_interaction(scores, doc_codes, doc_offsets, cands, ndocs, threshold=t_cs)
    return ops.centroid_interaction(scores, doc_codes, doc_offsets, survivors, ndocs // 4)


def funnel_launch(scores3, collection, nprobe, t_cs, ndocs):
    """The unchecked path the index's search uses, for a batch of queries in 3 C++ calls."""
    _, doc_codes, doc_offsets, ivf, ivf_offsets, _ = collection
    cands, cand_offsets = plaid.candidates_launch(scores3, ivf, ivf_offsets, nprobe, N_DOCS)
    _, survivors, surv_offsets = plaid.centroid_interaction_launch(
        scores3, doc_codes, doc_offsets, cands, cand_offsets, ndocs, t_cs)
    return plaid.centroid_interaction_launch(scores3, doc_codes, doc_offsets, survivors, surv_offsets,
                                             ndocs // 4, None)


def funnel_reference(scores, collection, nprobe, t_cs, ndocs):
    _, doc_codes, doc_offsets, ivf, ivf_offsets, _ = collection
    cands = reference.candidates(scores, ivf, ivf_offsets, nprobe, N_DOCS)
    _, survivors = reference.centroid_interaction(scores, doc_codes, doc_offsets, cands, ndocs, threshold=t_cs)
    return reference.centroid_interaction(scores, doc_codes, doc_offsets, survivors, ndocs // 4)


def time_ms(fn, repeats, clock=time.perf_counter):
    """(median, best) time of fn() in ms over `repeats` runs after one warm-up, by `clock`.

    On a shared machine a 1-thread run is timed by the process's CPU time
    (``time.process_time``), which does not count the time other processes held the core;
    a multi-thread run can only be timed by the wall clock.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append((clock() - start) * 1e3)
    return statistics.median(times), min(times)


def report(n_queries=16, repeats=5, threads=(1, 2)):
    collection = make_collection()
    centroids, doc_codes, doc_offsets, ivf, ivf_offsets, queries = collection
    lists = torch.diff(ivf_offsets).float()
    print(f"collection: K={N_CENTROIDS} n_docs={N_DOCS} tokens={doc_codes.numel()} "
          f"ivf entries={ivf.numel()} docs/cell mean={lists.mean():.1f} max={int(lists.max())}")
    q = queries(n_queries)
    scores = ops.centroid_scores(q, centroids)  # (nq, K, Lq)
    rows = []
    for name, (nprobe, t_cs, ndocs) in SETTINGS.items():
        n_cands = statistics.mean(ops.candidates(s, ivf, ivf_offsets, nprobe, N_DOCS).numel() for s in scores)
        kept = (scores.amax(dim=2) >= t_cs).float().mean().item()
        for s in scores[:2]:  # same answers before timing anything (scores equal up to fp32 rounding)
            got = funnel_kernels(s, collection, nprobe, t_cs, ndocs)
            want = funnel_reference(s, collection, nprobe, t_cs, ndocs)
            torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-5)
        for n_threads in threads:
            ops.set_num_threads(n_threads)
            torch.set_num_threads(n_threads)
            cands = [ops.candidates(s, ivf, ivf_offsets, nprobe, N_DOCS) for s in scores]
            survivors = [ops.centroid_interaction(s, doc_codes, doc_offsets, c, ndocs, threshold=t_cs)[1]
                         for s, c in zip(scores, cands)]
            per_query = {
                "gemm": lambda: [ops.centroid_scores(qi, centroids) for qi in q],
                "stage1": lambda: [ops.candidates(s, ivf, ivf_offsets, nprobe, N_DOCS) for s in scores],
                "stage2": lambda: [ops.centroid_interaction(s, doc_codes, doc_offsets, c, ndocs, threshold=t_cs)
                                   for s, c in zip(scores, cands)],
                "stage3": lambda: [ops.centroid_interaction(s, doc_codes, doc_offsets, c, ndocs // 4)
                                   for s, c in zip(scores, survivors)],
                "funnel": lambda: [funnel_kernels(s, collection, nprobe, t_cs, ndocs) for s in scores],
                "batched": lambda: funnel_launch(scores, collection, nprobe, t_cs, ndocs),
            }
            clock = time.process_time if n_threads == 1 else time.perf_counter
            row = {key: tuple(t / n_queries for t in time_ms(fn, repeats, clock)) for key, fn in per_query.items()}
            ref_scores = scores[:3]
            row["reference"] = tuple(t / len(ref_scores) for t in time_ms(
                lambda: [funnel_reference(s, collection, nprobe, t_cs, ndocs) for s in ref_scores], 2, clock))
            rows.append((name, nprobe, t_cs, ndocs, n_cands, kept, n_threads, row))
    print()
    print("ms/query, best of the runs (median in parentheses); 1 thread: CPU time, 2 threads: wall clock")
    print()
    print("| setting | nprobe / t_cs / ndocs | candidates | centroids kept | threads | S = C·Qᵀ (torch GEMM) "
          "| stage 1 | stage 2 | stage 3 | stages 1-3 (ops) | stages 1-3 (batched launch) | torch reference "
          "| speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, nprobe, t_cs, ndocs, n_cands, kept, n_threads, row in rows:
        cell = {key: f"{best:.3f} ({median:.3f})" for key, (median, best) in row.items()}
        cell["reference"] = f"{row['reference'][1]:.1f} ({row['reference'][0]:.1f})"
        print(f"| {name} | {nprobe} / {t_cs} / {ndocs} | {n_cands:.0f} | {kept:.1%} | {n_threads} | {cell['gemm']} "
              f"| {cell['stage1']} | {cell['stage2']} | {cell['stage3']} | {cell['funnel']} | {cell['batched']} "
              f"| {cell['reference']} | {row['reference'][1] / row['funnel'][1]:.0f}x |")


# --------------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module")
def collection():
    return make_collection()


@pytest.fixture(scope="module")
def query_scores(collection):
    return ops.centroid_scores(collection[5](8), collection[0])


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("impl", ["kernel", "reference"])
def test_bench_funnel(benchmark, collection, query_scores, setting, impl):
    nprobe, t_cs, ndocs = SETTINGS[setting]
    funnel = funnel_kernels if impl == "kernel" else funnel_reference
    scores = query_scores if impl == "kernel" else query_scores[:2]
    benchmark.extra_info["queries_per_round"] = len(scores)
    benchmark(lambda: [funnel(s, collection, nprobe, t_cs, ndocs) for s in scores])


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_bench_funnel_batched_launch(benchmark, collection, query_scores, setting):
    nprobe, t_cs, ndocs = SETTINGS[setting]
    benchmark.extra_info["queries_per_round"] = len(query_scores)
    benchmark(lambda: funnel_launch(query_scores, collection, nprobe, t_cs, ndocs))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    report(args.queries, args.repeats, tuple(args.threads))
