#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with a CUDA GPU (about 5 minutes).
#   bash bench/gpu_check.sh
# 1. the CUDA kernel tests on the real GPU (tests/test_kernels.py::test_cuda_kernels_on_gpu, plus
#    the PTX compile check);
# 2. device="cuda" end to end (bench/bench_gpu.py): float64 gradient check on the device, maps on
#    the GPU vs the CPU, then timings of every stage (all-layer Grad-CAM, Smooth Grad-CAM++,
#    Gradual Extrapolation, CAManim frames, ybROAD) against torch's own forward+backward;
# 3. the figures, with the device's name, go to the "gpu" section of bench/RESULTS.md (copied to
#    $OUT as well when that is set, as on the device tool's machines).
# Works offline: camonnx is installed without its dependencies (the machine must already have
# torch, numba + numba-cuda, onnx, onnxruntime, click, imageio, matplotlib, scipy, tqdm, pytest).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if ! "$PY" -c "import camonnx.kernels" 2>/dev/null; then
  "$PY" -m pip install --no-deps --no-build-isolation -q -e . || { echo "gpu_check: cannot install camonnx"; exit 1; }
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: torch sees no CUDA GPU')" || exit 1

echo "== 1/2 CUDA kernels on the GPU"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py \
  -k "test_cuda_kernels_on_gpu or test_cuda_kernels_compile_to_ptx" || status=1

echo "== 2/2 device='cuda' end to end and timings"
timeout 300 "$PY" bench/bench_gpu.py || status=1

if [ -n "${OUT:-}" ]; then cp bench/RESULTS.md "$OUT/RESULTS.md"; fi
echo "gpu_check: $([ $status -eq 0 ] && echo passed || echo FAILED)"
exit $status
