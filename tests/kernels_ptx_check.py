"""Compile every CUDA kernel to PTX for the real CUDA target, without needing a GPU.

The simulator runs the kernels' Python code but never types or lowers them for the GPU; this
script does (``numba.cuda.compile_ptx`` with the exact argument types the dispatcher passes:
float32 C-contiguous arrays, int32 tables, int64 offsets and scalars), so typing errors, unsupported
operations and bad atomics surface on CPU-only machines too. Needs libNVVM (a CUDA toolkit), not a
driver. Run by ``test_kernels.py`` in a subprocess (it must not see ``NUMBA_ENABLE_CUDASIM``).

Usage: ``python tests/kernels_ptx_check.py [--cc 9.0]``; exit status 0 when all compile, 77 when
libNVVM is not available (the test then skips).
"""

from __future__ import annotations

import argparse
import sys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cc", default="9.0", help="compute capability to compile for")
    args = ap.parse_args()
    cc = tuple(int(x) for x in args.cc.split("."))

    import numba.cuda.dispatcher as disp
    from numba import cuda, types

    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as e:
        print(f"NVVM unavailable: {e}")
        return 77

    try:
        cuda.get_current_device()
    except Exception:
        # No driver: device functions called from a kernel ask the current device for its
        # compute capability while typing; answer for the requested one.
        class _Dev:
            compute_capability = cc

        disp.get_current_device = lambda: _Dev()

    # Load kernels/_cuda.py by path: it needs only numba, and skipping the package import (torch)
    # saves seconds.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "kernels" / "_cuda.py"
    spec = importlib.util.spec_from_file_location("_camonnx_cuda_kernels_ptx", path)
    _cuda = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(_cuda)

    f32, f64, i32, i64 = types.float32, types.float64, types.int32, types.int64

    def A(dt, nd):
        return types.Array(dt, nd, "C")

    ups = (A(f32, 1), A(i64, 1), A(i64, 1), A(i64, 1), A(i32, 3), A(f32, 2), A(i32, 3), A(f32, 2))
    sigs = {
        "wsum_channel": (A(f32, 4), A(f32, 2), i64, A(f32, 3)),
        "wsum_elementwise": (A(f32, 4), A(f32, 4), i64, i64, A(f32, 3)),
        "ups_minmax": ups + (A(f32, 2), A(f32, 2)),
        "ups_write": ups + (A(f32, 2), A(f32, 2), i64, A(f32, 4)),
        "maps_minmax": (A(f32, 2), A(f32, 1), A(f32, 1)),
        "maps_scale": (A(f32, 2), A(f32, 1), A(f32, 1)),
        "ge_chansum": (A(f32, 4), A(f32, 3), A(f32, 1)),
        "ge_resize_mul": (A(f32, 3), A(f32, 3), A(f32, 1), A(i32, 3), A(f32, 2), A(i32, 3),
                          A(f32, 2), A(f32, 3)),
        "ge_stats": (A(f32, 2), A(f64, 2)),
        "ge_final": (A(f32, 2), A(f64, 2), A(f32, 2)),
        "power_sums": (A(f32, 2), A(f64, 1), A(f64, 1), A(f64, 1)),
    }
    failed = []
    for name, sig in sigs.items():
        try:
            ptx, _ = cuda.compile_ptx(getattr(_cuda, name).py_func, sig, cc=cc)
            assert ".entry" in ptx
            print(f"PTX ok: {name} ({len(ptx)} chars)")
        except Exception as e:  # report all, fail at the end
            failed.append(name)
            print(f"PTX FAILED: {name}: {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
