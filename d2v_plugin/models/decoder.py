"""The light convolutional decoder that fills masked positions and predicts targets."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.modules import SamePad, TransposeLast

from .config import DecoderConfig


def projection(cfg: DecoderConfig, embed_dim: int) -> nn.Module:
    """Decoder width -> model width: one Linear (named ``proj`` by the decoders), or
    ``projection_layers`` Linear+GELU layers, the first widening by ``projection_ratio``."""
    width = cfg.decoder_dim if cfg.decoder_layers > 0 else embed_dim
    projections = []
    for i in range(cfg.projection_layers - 1):
        next_width = int(width * cfg.projection_ratio) if i == 0 else width
        projections += [nn.Linear(width, next_width), nn.GELU()]
        width = next_width
    projections.append(nn.Linear(width, embed_dim))
    return projections[0] if len(projections) == 1 else nn.Sequential(*projections)


class Decoder1d(nn.Module):
    """Grouped 1D convs over the full sequence, then a projection back to the model width.

    Input: student tokens put back at their positions with noise at masked ones (B, T, D).
    With ``decoder_layers == 0`` it is a single linear head, the data2vec 1.0 recipe.
    """

    def __init__(self, cfg: DecoderConfig, embed_dim: int):
        super().__init__()
        self.residual = cfg.decoder_residual

        def conv_block(in_dim: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv1d(in_dim, cfg.decoder_dim, kernel_size=cfg.decoder_kernel,
                          padding=cfg.decoder_kernel // 2, groups=cfg.decoder_groups),
                SamePad(cfg.decoder_kernel),
                TransposeLast(),
                nn.LayerNorm(cfg.decoder_dim, elementwise_affine=False),
                TransposeLast(),
                nn.GELU(),
            )

        self.blocks = nn.Sequential(*[
            conv_block(embed_dim if i == 0 else cfg.decoder_dim) for i in range(cfg.decoder_layers)])
        self.proj = projection(cfg, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, D, T)
        for block in self.blocks:
            y = block(x)
            x = x + y if self.residual and y.size(1) == x.size(1) else y
        return self.proj(x.transpose(1, 2))  # (B, T, D)


class SamePad2d(nn.Module):
    """Trim the extra row and column an even kernel with padding ``kernel // 2`` adds."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :-self.remove, :-self.remove] if self.remove else x


class ChannelLayerNorm2d(nn.Module):
    """Layer norm over the channels of (B, C, H, W) at every grid position, no affine."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels, self.eps = channels, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        return F.layer_norm(x, (self.channels,), eps=self.eps).permute(0, 3, 1, 2)


class Decoder2d(nn.Module):
    """Grouped 2D convs over the patch grid (images), then a projection to the model width.

    Input (B, T, D) with T = height * width patches in row-major order (student tokens put
    back at their positions, noise at masked ones); output (B, T, D). Each layer is
    conv (same padding) -> layer norm over channels -> GELU, with a residual connection
    when the layer keeps the width (the reference's ``Decoder2d``; parameter names
    ``blocks.<i>.0`` and ``proj`` as there).
    """

    def __init__(self, cfg: DecoderConfig, embed_dim: int, height: int, width: int):
        super().__init__()
        self.residual = cfg.decoder_residual
        self.height, self.width = height, width
        kernel = cfg.decoder_kernel

        def conv_block(in_dim: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(in_dim, cfg.decoder_dim, kernel_size=kernel, padding=kernel // 2,
                          groups=cfg.decoder_groups),
                SamePad2d(kernel),
                ChannelLayerNorm2d(cfg.decoder_dim),
                nn.GELU(),
            )

        self.blocks = nn.Sequential(*[
            conv_block(embed_dim if i == 0 else cfg.decoder_dim) for i in range(cfg.decoder_layers)])
        self.proj = projection(cfg, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        if T != self.height * self.width:
            raise ValueError(f"Decoder2d expects {self.height}x{self.width}={self.height * self.width} "
                             f"patches, got {T}")
        x = x.transpose(1, 2).reshape(B, D, self.height, self.width)  # (B, D, H, W)
        for block in self.blocks:
            y = block(x)
            x = x + y if self.residual and y.size(1) == x.size(1) else y
        return self.proj(x.flatten(2).transpose(1, 2))  # (B, T, D)
