"""The kernel API: one function per kernel, dispatched by the inputs' device.

Each op checks its arguments (ValueError/TypeError naming the argument), allocates its
outputs, and calls ``colbert_engine._C`` (CPU) or ``colbert_engine._cuda`` (GPU). The
pure-torch reference of every op is in :mod:`colbert_engine.ops.reference`. The native ops
are also registered with ``torch.library`` as ``torch.ops.colbert_engine.*`` and stay in the
graph under ``torch.compile`` (:mod:`colbert_engine.ops._library`).
"""

from colbert_engine.ops import reference
from colbert_engine.ops._info import (get_num_threads, get_pool_spin_us, hold_num_threads, info, set_num_threads,
                                      set_pool_spin_us, wake_pool)
from colbert_engine.ops.codec import compress_residuals, decompress_residuals
from colbert_engine.ops.lut_maxsim import lut_maxsim
from colbert_engine.ops.maxsim import maxsim, maxsim_topk
from colbert_engine.ops.plaid import candidates, centroid_interaction, centroid_scores
from colbert_engine.ops.project import project, project_backend
from colbert_engine.ops import _library

# Under torch.compile these route to the torch.library registrations (ops/_library.py).
maxsim = _library.compile_aware(maxsim, _library.maxsim)
maxsim_topk = _library.compile_aware(maxsim_topk, _library.maxsim_topk)
lut_maxsim = _library.compile_aware(lut_maxsim, _library.lut_maxsim)
compress_residuals = _library.compile_aware(compress_residuals, _library.compress_residuals)
decompress_residuals = _library.compile_aware(decompress_residuals, _library.decompress_residuals)

__all__ = ["info", "set_num_threads", "get_num_threads", "hold_num_threads", "get_pool_spin_us", "set_pool_spin_us", "wake_pool", "maxsim", "maxsim_topk", "compress_residuals",
           "decompress_residuals", "lut_maxsim", "centroid_scores", "candidates", "centroid_interaction", "project",
           "project_backend", "reference"]
