"""The FLOP counting behind the benchmarks' MFU figures (benchmarks/flops.py), checked against
FLOPs worked out by hand for single layers, forward + backward."""
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from flops import count_flops, time_matmul  # noqa: E402


def fwd_bwd(module, x):
    def run():
        module(x).sum().backward()
    return run


def test_linear_counts_six_flops_per_weight_per_token():
    layer = nn.Linear(32, 48)
    x = torch.randn(5, 7, 32, requires_grad=True)
    _, flops, _ = count_flops(fwd_bwd(layer, x))
    assert flops == 3 * 2 * (5 * 7) * 32 * 48  # forward, grad input, grad weight


def test_grouped_conv_counts_each_gradient_like_the_forward():
    torch.manual_seed(0)
    for groups in (1, 4, 16):
        conv = nn.Conv1d(64, 64, kernel_size=19, padding=9, groups=groups)
        x = torch.randn(3, 64, 100, requires_grad=True)
        forward = 2 * 3 * 100 * 64 * (64 // groups) * 19
        _, flops, by_op = count_flops(fwd_bwd(conv, x))
        assert by_op["aten.convolution"] == forward
        assert by_op["aten.convolution_backward"] == 2 * forward, groups  # grad input + grad weight
        with FlopCounterMode(display=False) as torch_counter:  # torch's own formula, for the record
            fwd_bwd(conv, x)()
        torch_bwd = torch_counter.get_flop_counts()["Global"][torch.ops.aten.convolution_backward]
        # equal for a dense conv; torch counts the weight gradient `groups` times otherwise
        assert torch_bwd == forward + groups * forward, groups
    # no gradient for the input (the first layer of a feature encoder): the weight gradient only
    conv = nn.Conv1d(1, 8, kernel_size=10, stride=5)
    x = torch.randn(2, 1, 400)
    _, _, by_op = count_flops(fwd_bwd(conv, x))
    assert by_op["aten.convolution_backward"] == by_op["aten.convolution"]


def test_attention_is_counted_on_cpu():
    q = torch.randn(2, 4, 50, 16, requires_grad=True)
    mask = torch.randn(2, 4, 50, 50)

    def run():
        F.scaled_dot_product_attention(q, q, q, attn_mask=mask).sum().backward()
    _, flops, by_op = count_flops(run)
    forward = 2 * 2 * (2 * 4 * 50 * 50 * 16)  # Q K^T and A V: 2 FLOPs per multiply-add each
    assert flops == forward + 2.5 * forward  # torch's SDPA backward formula: 5 matmuls
    assert any("attention" in op for op in by_op)


def test_time_matmul_reports_flop_rates():
    r = time_matmul(256, reps=3)
    assert r["n"] == 256 and len(r["seconds"]) == 3
    assert r["best_flops_per_s"] == 2 * 256 ** 3 / min(r["seconds"])
    assert r["best_flops_per_s"] >= r["median_flops_per_s"] > 0
