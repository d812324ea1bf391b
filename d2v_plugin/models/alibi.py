"""ALiBi attention bias (Press et al.), symmetric for a non-causal encoder.

The bias between positions i and j of head h is ``-slope_h * |p_i - p_j|``. We compute it
from the *positions* of the tokens a row actually holds, so the student, which sees only
kept frames, gets the bias of their original positions without building a (T, T) matrix
per row and gathering it.
"""
import math
from typing import List

import torch


def alibi_slopes(num_heads: int) -> List[float]:
    """Geometric head slopes 2^(-8/n), 2^(-16/n), ...; interleaved for non powers of two."""
    def power_of_two_slopes(n: int) -> List[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two_slopes(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two_slopes(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def alibi_bias(positions: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """Bias for tokens at ``positions`` (R, K) with per-row/per-head ``slopes`` (R or 1, H).

    Returns (R, H, K, K) float32.
    """
    pos = positions.to(torch.float32)
    distance = (pos.unsqueeze(-1) - pos.unsqueeze(-2)).abs().neg_()  # (R, K, K)
    return distance.unsqueeze(1) * slopes.to(torch.float32)[:, :, None, None]
