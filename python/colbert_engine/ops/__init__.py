"""The kernel API: one function per kernel, dispatched by the inputs' device.

Each op checks its arguments (ValueError/TypeError naming the argument), allocates its
outputs, and calls ``colbert_engine._C`` (CPU) or ``colbert_engine._cuda`` (GPU). The
pure-torch reference of every op is in :mod:`colbert_engine.ops.reference`.
"""

from colbert_engine.ops import reference
from colbert_engine.ops._info import get_num_threads, info, set_num_threads
from colbert_engine.ops.codec import compress_residuals, decompress_residuals
from colbert_engine.ops.lut_maxsim import lut_maxsim
from colbert_engine.ops.maxsim import maxsim, maxsim_topk
from colbert_engine.ops.plaid import candidates, centroid_interaction, centroid_scores
from colbert_engine.ops.project import project, project_backend

__all__ = ["info", "set_num_threads", "get_num_threads", "maxsim", "maxsim_topk", "compress_residuals",
           "decompress_residuals", "lut_maxsim", "centroid_scores", "candidates", "centroid_interaction", "project",
           "project_backend", "reference"]
