"""Model FLOPs, a measured dense-matmul peak and a table of GPU bf16 peaks (shared by the
benchmark scripts in this folder).

* :func:`count_flops` runs a callable under ``torch.utils.flop_counter.FlopCounterMode`` and
  returns the FLOPs of every matmul, convolution and attention it executed (forward and
  backward, if the callable runs backward). Element-wise ops, norms and the optimizer are not
  counted: the usual "model FLOPs" convention of MFU figures.
* two corrections to torch's counter (:func:`flop_formulas`): the CPU fused attention kernel,
  which it does not count at all, and the weight gradient of grouped convolutions, which it
  counts ``groups`` times.
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


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias_sizes, _stride, _padding, _dilation,
                        transposed, _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each gradient of a convolution costs what its forward costs: 2 FLOPs per weight
    (``w_shape`` already holds C_in / groups) per output position (input position for a
    transposed conv) per sample.

    torch's own formula (torch 2.13) computes the weight gradient as a dense convolution over
    all C_in input channels, i.e. ``groups`` times too many FLOPs for a grouped convolution
    (data2vec's positional encoder and decoder use 16 groups: the base d2v2 update would be
    counted ~30 % too high).
    """
    spatial = (x_shape if transposed else grad_out_shape)[2:]
    forward = 2 * int(grad_out_shape[0]) * _prod(spatial) * _prod(w_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def flop_formulas() -> Dict[object, Callable]:
    """Our additions/corrections to torch's registry (passed as FlopCounterMode's custom_mapping).

    torch's counter has no formula for the CPU fused attention kernel
    (``aten._scaled_dot_product_flash_attention_for_cpu``, what ``scaled_dot_product_attention``
    dispatches to on CPU): it gets torch's own SDPA formulas, so attention counts on CPU as on
    GPU. ``aten.convolution_backward`` gets the group-aware :func:`conv_backward_flops`.
    """
    aten = torch.ops.aten
    formulas = {aten.convolution_backward: conv_backward_flops}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_sdpa_backward)):
        op = getattr(aten, name, None)
        if op is not None:
            formulas[op] = formula
    return formulas


def count_flops(fn: Callable[[], object]) -> Tuple[object, int, Dict[str, int]]:
    """Run ``fn()`` once under FlopCounterMode: (its result, total FLOPs, FLOPs per aten op)."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=flop_formulas()) as counter:
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
