"""The ``colbert-engine`` command."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _cmd_info(args: argparse.Namespace) -> int:
    from colbert_engine.ops import info

    report = info()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # Until the encoder and index land: MaxSim over random packed documents, checked
    # against the torch reference, with timings.
    import torch

    from colbert_engine import ops

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(0, 300, (args.docs,), generator=gen)
    offsets = torch.zeros(args.docs + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(lengths, 0)
    emb = torch.nn.functional.normalize(torch.randn(int(offsets[-1]), 128, generator=gen), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(4, 32, 128, generator=gen), dim=2)
    start = time.perf_counter()
    scores = ops.maxsim(queries, emb, offsets)
    kernel_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    expected = ops.reference.maxsim(queries, emb, offsets)
    reference_ms = (time.perf_counter() - start) * 1e3
    ok = torch.allclose(scores, expected, atol=1e-4, rtol=1e-5)
    print(f"maxsim: 4 queries x {args.docs} docs ({int(offsets[-1])} tokens): "
          f"{kernel_ms:.1f} ms (reference {reference_ms:.1f} ms), matches reference: {ok}")
    top = scores.topk(3, dim=1)
    for q in range(queries.shape[0]):
        print(f"  query {q}: top docs {top.indices[q].tolist()} scores {[round(s, 3) for s in top.values[q].tolist()]}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colbert-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="what this installation can do: modules, threads, ISA, GPUs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="run a small example end to end")
    p.add_argument("--docs", type=int, default=1000)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
