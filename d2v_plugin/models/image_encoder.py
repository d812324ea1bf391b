"""Image modality: patch embedding + fixed 2D sin-cos positions + one CLS token + prenet.

Parameter names and init follow the reference implementation's image encoder
(``local_encoder.proj`` conv, ``fixed_positional_encoder.positions``, ``extra_tokens``,
``context_encoder``, ``decoder``), so its image checkpoints load unchanged.
"""
import numpy as np
import torch
import torch.nn as nn
from fairseq.modules import GradMultiply

from ..masking import BlockMaskSampler, BlockMaskSampler2d, MaskSampler
from .config import Data2Vec2Config, ImageModalityConfig
from .decoder import Decoder2d
from .modality import ContextEncoder, ModalityEncoder


def sincos_positions_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """(height * width, dim) fixed positions, row-major over the grid (MAE's 2D sin-cos).

    The first half of the channels encodes the column, the second half the row; each half
    is [sin(p * w_k), cos(p * w_k)] with w_k = 10000 ** (-k / (dim / 4)), k < dim / 4.
    """
    if dim % 4 != 0:
        raise ValueError(f"2D sin-cos positions need embed_dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))  # (dim/4,)
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32),
                             indexing="ij")

    def encode(pos: np.ndarray) -> np.ndarray:  # (N,) -> (N, dim/2)
        angles = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return torch.from_numpy(np.concatenate([encode(cols), encode(rows)], axis=1)).float()


class PatchEmbed(nn.Module):
    """(B, C, H, W) image -> (B, N, D) patch embeddings, N = (H / p) * (W / p) row-major."""

    def __init__(self, input_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if input_size % patch_size != 0:
            raise ValueError(f"input_size {input_size} is not a multiple of patch_size {patch_size}")
        self.input_size, self.patch_size = input_size, patch_size
        self.grid = input_size // patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"expected images (B, C, {self.input_size}, {self.input_size}), "
                             f"got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class FixedPositionalEncoder(nn.Module):
    """Holds the (1, N, D) positions as a frozen parameter (the reference's state-dict key)."""

    def __init__(self, positions: torch.Tensor):
        super().__init__()
        self.positions = nn.Parameter(positions, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.positions.to(x.dtype)


class ImageEncoder(ModalityEncoder):
    """Image -> patch tokens; the student sees squares of kept patches (inverse block masking)."""

    def __init__(self, cfg: ImageModalityConfig, model_cfg: Data2Vec2Config, task=None):
        super().__init__(cfg, model_cfg)
        if cfg.use_alibi_encoder:
            raise NotImplementedError("use_alibi_encoder=true (2D ALiBi) is not supported for images")
        if cfg.transformer_decoder:
            raise NotImplementedError("transformer_decoder=true is not supported: use the 2D conv decoder")
        dim = model_cfg.embed_dim
        patch_embed = PatchEmbed(cfg.input_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        w = patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.size(0), -1))  # as a Linear on flattened patches (MAE)
        self.local_encoder = (patch_embed if cfg.embed_dim == dim else
                              nn.Sequential(patch_embed, nn.Linear(cfg.embed_dim, dim)))
        self.grid = patch_embed.grid
        self.fixed_positional_encoder = (
            FixedPositionalEncoder(sincos_positions_2d(dim, self.grid, self.grid).unsqueeze(0))
            if cfg.fixed_positions else None)
        self.context_encoder = ContextEncoder(model_cfg, cfg)
        self.decoder = Decoder2d(cfg.decoder, dim, self.grid, self.grid)

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> patch embeddings (B, N, D)."""
        mult = self.cfg.local_grad_mult
        if mult <= 0:
            with torch.no_grad():
                return self.local_encoder(source)
        x = self.local_encoder(source)
        return x if mult == 1.0 else GradMultiply.apply(x, mult)

    def add_fixed_positions(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_positional_encoder is None:
            return x
        return x + self.fixed_positional_encoder(x)

    @staticmethod
    def mask_sampler(cfg: ImageModalityConfig) -> MaskSampler:
        """Square blocks on the patch grid (inverse: blocks are kept); 1D spans if mask_length <= 1."""
        if cfg.mask_length <= 1:
            return BlockMaskSampler(cfg.mask_prob, cfg.mask_length, cfg.mask_prob_adjust, cfg.inverse_mask)
        return BlockMaskSampler2d(cfg.mask_prob, cfg.mask_length, cfg.mask_prob_adjust, cfg.inverse_mask)
