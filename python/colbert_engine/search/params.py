"""Funnel parameters: PLAID's defaults by k, adapted to the collection where they fail."""

from __future__ import annotations

from dataclasses import dataclass
import math
import numbers

# Tokens of the collection the default nprobe probes per query token, at least (by k: more
# results need more of each relevant document's tokens found); and the cap.
PROBED_TOKENS = {10: 160, 100: 256}
PROBED_TOKENS_BEYOND = 512
MAX_AUTO_NPROBE = 16


@dataclass(frozen=True)
class SearchParams:
    """Funnel parameters. ``exact_docs`` documents reach stage 4; a segment with at most
    ``exhaustive_docs`` allowed documents skips stages 1-3 (all of them reach stage 4)."""

    k: int
    nprobe: int
    centroid_score_threshold: float | None
    ndocs: int
    exact_docs: int
    exhaustive_docs: int


def check_count(value, name: str) -> int:
    """A search size (k, nprobe, ndocs): an int >= 1. A float or a string is a TypeError, not
    silently truncated (nprobe=1.7 used to mean 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name}: must be >= 1, got {value}")
    return int(value)


def default_params(k: int, nprobe=None, centroid_score_threshold=None, ndocs=None, *, n_centroids=None,
                   n_docs=None, n_tokens=None, nbits=None) -> SearchParams:
    """PLAID's defaults by k (DESIGN.md section 5), adapted to the collection; any given
    value overrides its default.

    | k      | nprobe | t_cs | ndocs                      | stage 4 |
    | <= 10  | 1      | 0.5  | 512 (PLAID: 256)           | ndocs/4 |
    | <= 100 | 2      | 0.45 | 2048 (PLAID: 1024)         | ndocs/4 |
    | > 100  | 4      | 0.4  | max(4k, 4096)              | ndocs/4 |

    ndocs departs from PLAID where the per-dimension codes (index/codec.py) rank better than
    stages 1-3's centroid-only scores can pre-select for them: at k = 100 stage 4's 256
    documents left recall@100 at 0.855 / 0.876 (anisotropic stop-word member / hard 1M
    tokens, 4 bits) with the codes' ceiling at 0.961 / 0.958; 512 give 0.932 / 0.932 at
    ~1.45x the latency (1,024: 0.954 / 0.948 at 2.2x). At k = 10 and 4 bits, 64 documents
    left Vaswani at 0.962 (codes 0.977); 128 give 0.973 at ~1.4x the latency. With the
    product-quantized codes (index/codec.py, "codebook") the same holds at 2 bits: Vaswani
    0.943 at 256 documents and nprobe 2, 0.947 at 512, 0.952 = the codes' ceiling at 512
    with nprobe 3 (1.25x the latency per query).

    From the collection (``n_centroids``, ``n_tokens``), where the fixed values fail:

    - nprobe: PLAID's K = 2^floor(log2(16 sqrt(T))) leaves ~120 tokens per cell at 1M tokens
      but ~17 at 34k (XQuAD-R) and ~9 at 18k: one probed cell per query token then holds too
      few of the relevant documents' tokens (MiniLM on XQuAD-R, 2 bits: recall@10 0.79 at
      nprobe 1, 0.86 at 2, 0.87 at 4 with the codes' ceiling at 0.876). The default probes
      at least ``PROBED_TOKENS[k]`` tokens per query token, at most 16 cells:
      - k <= 10: 160 tokens, ``ceil(160 / (T / K))`` cells. 64 left XQuAD-R at 4 bits (per-
        dimension buckets) at 0.969 with the codes at 0.982; 96 gave nprobe 6 there and
        0.976, but left Vaswani (70 tokens per cell) at nprobe 2, where 3 cells lift 2-bit
        recall@10 by 0.003-0.005 (above); 160 gives 3 there, 5 at 300k tokens, 2 at 1M.
      - k <= 100: 256 tokens. On the anisotropic stop-word member at 2 bits (pooled
        codes), recall@100 was 0.701 at PLAID's nprobe 2, 0.721 at 4, 0.726 at 8 with the
        codes' ceiling at 0.727; ndocs and t_cs changed nothing there.
      - beyond: 512 tokens.
    - exhaustive_docs: a segment with at most ``2 * exact_docs`` allowed documents is scored
      exhaustively (stage 4 on all of them costs about twice what stage 4 of the funnel costs,
      with stages 1-3 saved, and it returns the codes' exact top-k).
    """
    k = check_count(k, "k")
    if k <= 10:
        d_nprobe, d_tcs, d_ndocs = 1, 0.5, 512
    elif k <= 100:
        d_nprobe, d_tcs, d_ndocs = 2, 0.45, 2048
    else:
        d_nprobe, d_tcs, d_ndocs = 4, 0.4, max(4 * k, 4096)
    if n_centroids and n_tokens:
        per_cell = n_tokens / n_centroids
        probed = next((tokens for top, tokens in PROBED_TOKENS.items() if k <= top), PROBED_TOKENS_BEYOND)
        d_nprobe = max(d_nprobe, min(MAX_AUTO_NPROBE, math.ceil(probed / per_cell)))
    nprobe = d_nprobe if nprobe is None else check_count(nprobe, "nprobe")
    if centroid_score_threshold is None:
        t_cs = d_tcs
    elif isinstance(centroid_score_threshold, bool) or not isinstance(centroid_score_threshold, numbers.Real) \
            or not math.isfinite(centroid_score_threshold):
        raise ValueError(f"centroid_score_threshold: expected a finite float or None, got {centroid_score_threshold!r}")
    else:
        t_cs = float(centroid_score_threshold)
    ndocs = d_ndocs if ndocs is None else check_count(ndocs, "ndocs")
    # Stage 2 keeps ndocs documents: fewer than k would silently cut the result short.
    ndocs = max(ndocs, k)
    exact_docs = max(ndocs // 4, k)
    return SearchParams(k, nprobe, t_cs, ndocs, exact_docs, 2 * exact_docs)
