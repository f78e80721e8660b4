#!/usr/bin/env bash
# The GPU checks a session runs when it is lent a CUDA machine (see README "GPU status"):
# build with CUDA for the local GPU, CUDA tests, the whole suite, compute-sanitizer memcheck
# over the kernel tests, and the CUDA benchmarks. Each step is bounded in time and logged to
# $OUT (default ./gpu-out); a failing step does not stop the next.
#   OUT=/tmp/gpu bash benchmarks/gpu_checks.sh [steps...]   steps: build tests sanitize bench bench10m full
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
STEPS=${*:-build tests bench sanitize full}
export PYTHONPATH=$PWD/python PYTHONUNBUFFERED=1 CE_REQUIRE_CUDA_BUILD=1
PY=${PY:-python3}
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
export PATH=$(dirname "$NVCC"):$PATH
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  log "$name: start"
  local t0=$SECONDS
  timeout -k 5 "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  log "$name: rc=$rc in $((SECONDS - t0)) s"
  tail -n 25 "$OUT/$name.log"
}
for s in $STEPS; do case $s in
  build)
    { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; $PY -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } > "$OUT/device.txt" 2>&1
    cat "$OUT/device.txt"
    step build 240 bash -c "cmake -S . -B build-gpu -G Ninja -DCE_INPLACE=ON -DCE_CUDA=ON -DCE_CUDA_ARCHS=90 \
      -DPython_EXECUTABLE=$(command -v $PY) -Dpybind11_DIR=\$($PY -c 'import pybind11;print(pybind11.get_cmake_dir())') \
      && cmake --build build-gpu -j 16" ;;
  tests)
    step tests 180 $PY -m pytest -q -p no:cacheprovider -rfE --durations=5 tests/ops tests/index/test_search_device.py -m "gpu or not gpu" ;;
  bench)
    step bench 200 $PY benchmarks/bench_cuda.py --json "$OUT/bench_cuda.json" ;;
  bench10m)
    step bench10m 200 $PY benchmarks/bench_cuda.py --search-tokens 10000000 --json "$OUT/bench_cuda_10m.json" ;;
  sanitize)
    step sanitize 200 compute-sanitizer --tool memcheck --print-limit 20 $PY -m pytest -q -p no:cacheprovider -x -rfE tests/ops/test_cuda_parity.py ;;
  full)
    step full 200 env TRITON_INTERPRET=0 $PY -m pytest -q -p no:cacheprovider -rfE tests ;;
esac; done
log "done"
