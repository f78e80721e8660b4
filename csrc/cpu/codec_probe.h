// CPU-internal parts of the probed argmax (common/codec.h has the contract): the block
// size and the per-thread scratch, allocated by codec.cpp before the parallel region so
// nothing inside it can throw.
#pragma once
#include <cstdint>

namespace ce {

// Tokens inverted into per-cell lists at a time: with ~8 probes over ~256 cells each cell
// block is reused by ~30-60 tokens while it sits in L2.
constexpr int64_t kProbeBlock = 2048;

struct ProbeScratch {
  int32_t* cell_count;   // [n_cells + 1] list offsets
  int32_t* cell_fill;    // [n_cells]
  int32_t* probes;       // [kProbeBlock * nprobe]
  int32_t* lists;        // [kProbeBlock * nprobe + n_cells * 3] token lists, tile-padded
  float* best_s;         // [kProbeBlock * 16] running best score per token and lane
  int32_t* best_i;       // [kProbeBlock * 16] its centroid id
  float* probe_scores;   // [nprobe]
};

}  // namespace ce
