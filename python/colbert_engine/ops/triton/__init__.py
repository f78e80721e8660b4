"""Triton kernels: one more backend of an op in ``colbert_engine.ops`` (GPU, or the Triton
interpreter on CPU when ``TRITON_INTERPRET=1``). Import lazily: ``triton.jit`` decides at
import time whether to interpret."""
