"""Transformer blocks of the shared encoder (layout compatible with the reference AltBlock)."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention_mask(bias: Optional[torch.Tensor], padding_mask: Optional[torch.Tensor],
                   dtype: torch.dtype) -> Optional[torch.Tensor]:
    """Fold the ALiBi bias (R, H, K, K) and key padding (R, K) into one additive mask.

    One additive mask lets ``scaled_dot_product_attention`` pick a fused kernel on GPUs.
    """
    if padding_mask is not None and not padding_mask.any():
        padding_mask = None
    if padding_mask is None:
        return None if bias is None else bias.to(dtype)
    pad = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
    pad = pad.masked_fill_(padding_mask, float("-inf"))[:, None, None, :]
    return pad if bias is None else bias.to(dtype) + pad


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, N, C/H)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop1(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.size(0),) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.rate)
        return x * keep / (1 - self.rate)


class Block(nn.Module):
    """Attention + MLP block that also returns the MLP output, the data2vec target.

    Post-LN (the published models): ``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``.
    Pre-LN: ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))`` -- the standard form; the
    reference implementation drops the attention residual here (docs/design.md, "Deliberate
    differences from the reference implementation").
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop: float, attn_drop: float,
                 mlp_drop: float, post_mlp_drop: float, drop_path: float, norm_eps: float,
                 norm_affine: bool, layer_norm_first: bool, ffn_targets: bool):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.ffn_targets = ffn_targets
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_affine)
        self.attn = Attention(dim, num_heads, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, elementwise_affine=norm_affine)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), mlp_drop)
        self.post_mlp_dropout = nn.Dropout(post_mlp_drop)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns (block output, target candidate), both (B, N, C)."""
        if self.layer_norm_first:
            x = x + self.drop_path(self.attn(self.norm1(x), mask))
            ffn = self.mlp(self.norm2(x))
            x = x + self.drop_path(self.post_mlp_dropout(ffn))
        else:
            x = self.norm1(x + self.drop_path(self.attn(x, mask)))
            ffn = self.mlp(x)
            x = self.norm2(x + self.drop_path(self.post_mlp_dropout(ffn)))
        return x, (ffn if self.ffn_targets else x)
