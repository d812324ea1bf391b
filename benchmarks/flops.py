"""Model FLOPs, a measured dense-matmul peak and a table of GPU bf16 peaks (shared by the
benchmark scripts in this folder).

* :func:`count_flops` runs a callable under ``torch.utils.flop_counter.FlopCounterMode`` and
  returns the FLOPs of every matmul, convolution and attention it executed (forward and
  backward, if the callable runs backward). Element-wise ops, norms and the optimizer are not
  counted: the usual "model FLOPs" convention of MFU figures.
* torch's counter has no formula for the CPU fused attention kernel
  (``aten._scaled_dot_product_flash_attention_for_cpu``, what ``scaled_dot_product_attention``
  dispatches to on CPU); :func:`register_cpu_attention_flops` adds one with torch's own SDPA
  formulas, so attention is counted on CPU as it is on GPU.
* :func:`time_matmul` times ``n x n`` matmuls and returns FLOP/s (best and median).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional, Tuple

import torch
from torch.utils import flop_counter

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s. Matched as
# substrings of torch.cuda.get_device_name(), first match wins (the specific names first).
BF16_DENSE_PEAK_TFLOPS: Tuple[Tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200 NVL", 835.6),
    ("H200", 989.4),        # H200 SXM ("NVIDIA H200")
    ("H100 NVL", 835.6),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),        # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),        # SXM4 and PCIe, 40/80 GB
    ("L40S", 362.1),
    ("L4", 121.0),
)


def bf16_peak_tflops(device_name: str) -> Tuple[Optional[float], Optional[str]]:
    """(peak TFLOP/s, table key) for a CUDA device name, or (None, None) if unknown."""
    for key, peak in BF16_DENSE_PEAK_TFLOPS:
        if key in device_name:
            return peak, key
    return None, None


_registered = False


def register_cpu_attention_flops() -> None:
    """Count the CPU flash-attention kernel like torch counts the CUDA ones."""
    global _registered
    if _registered:
        return
    _registered = True
    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(fwd)
        def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)
    if bwd is not None and bwd not in flop_counter.flop_registry:
        @flop_counter.register_flop_formula(bwd)
        def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args,
                               out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape,
                                                         value_shape)


def count_flops(fn: Callable[[], object]) -> Tuple[object, int, Dict[str, int]]:
    """Run ``fn()`` once under FlopCounterMode: (its result, total FLOPs, FLOPs per aten op)."""
    register_cpu_attention_flops()
    with flop_counter.FlopCounterMode(display=False) as counter:
        result = fn()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return result, int(counter.get_total_flops()), per_op


def time_matmul(n: int = 2048, reps: int = 5, dtype: torch.dtype = torch.float32,
                device: str = "cpu", warmup: int = 1) -> Dict[str, float]:
    """FLOP/s of ``a @ b`` for two dense ``n x n`` matrices (2 n^3 FLOPs each)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    cuda = str(device).startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        a @ b
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n ** 3
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "reps": reps, "seconds": times,
            "best_flops_per_s": flops / min(times), "median_flops_per_s": flops / statistics.median(times)}
