"""The light convolutional decoder that fills masked positions and predicts targets."""
import torch
import torch.nn as nn
from fairseq.modules import SamePad, TransposeLast

from .config import DecoderConfig


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
        width = cfg.decoder_dim if cfg.decoder_layers > 0 else embed_dim
        projections = []
        for i in range(cfg.projection_layers - 1):
            next_width = int(width * cfg.projection_ratio) if i == 0 else width
            projections += [nn.Linear(width, next_width), nn.GELU()]
            width = next_width
        projections.append(nn.Linear(width, embed_dim))
        self.proj = projections[0] if len(projections) == 1 else nn.Sequential(*projections)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, D, T)
        for block in self.blocks:
            y = block(x)
            x = x + y if self.residual and y.size(1) == x.size(1) else y
        return self.proj(x.transpose(1, 2))  # (B, T, D)
