"""The contract between the shared data2vec 2.0 model and one modality.

A modality encoder turns raw input into tokens for the shared blocks and owns everything
modality-specific around them::

    local_features(source)                 raw input -> (B, T, D) local features (no extra tokens)
    frame_padding_mask(source, pad, T)     input padding -> (B, T) token padding, or None
    mask_sampler(cfg)                      picklable (rows, T, generator) -> (rows, T) bool masks
    contextualize(x, padding, mask, drop)  positions, masking, extra tokens, prenet -> Contextualized
    decode(x, mask_info)                   student output -> (rows, T, D) predictions

The model (``data2vec2.py``) never looks inside: adding a modality is a new subclass, an entry
in ``modality_encoders.MODALITY_ENCODERS`` and its config in ``config.ModalitiesConfig``.
Parameter names follow the reference implementation (``local_encoder``, ``context_encoder``,
``decoder``, ``extra_tokens``, ``alibi_scale``) so its checkpoints load unchanged.
"""
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..masking import BlockMaskSampler, MaskInfo, MaskSampler, sample_channel_mask
from .alibi import alibi_bias, alibi_slopes
from .blocks import Block, attention_mask
from .config import Data2Vec2Config, ModalityConfig

class Contextualized(NamedTuple):
    """Input of the shared blocks.

    x:            (R, K, D) tokens (extra tokens first, then the kept positions).
    padding_mask: (R, K) bool or None.
    alibi_bias:   (R, H, K, K) float32 bias *before* the per-layer scale, or None.
    alibi_scale:  (L or 1, H) non-negative scale per layer and head, or None.
    """

    x: torch.Tensor
    padding_mask: Optional[torch.Tensor]
    alibi_bias: Optional[torch.Tensor]
    alibi_scale: Optional[torch.Tensor]


def make_block(cfg: Data2Vec2Config, drop_path: float) -> Block:
    return Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, drop=cfg.encoder_dropout,
                 attn_drop=cfg.attention_dropout, mlp_drop=cfg.activation_dropout,
                 post_mlp_drop=cfg.post_mlp_drop, drop_path=drop_path, norm_eps=cfg.norm_eps,
                 norm_affine=cfg.norm_affine, layer_norm_first=cfg.layer_norm_first,
                 ffn_targets=not cfg.end_of_block_targets)


class LayerMasks:
    """Per-layer additive attention masks (ALiBi bias x layer scale + padding), built lazily.

    With one scale shared by all layers (the published configs) the mask is built once and
    reused by every block instead of once per block.
    """

    def __init__(self, bias: Optional[torch.Tensor], scale: Optional[torch.Tensor],
                 padding_mask: Optional[torch.Tensor], dtype: torch.dtype):
        self.bias, self.scale, self.padding_mask, self.dtype = bias, scale, padding_mask, dtype
        self._shared = None

    def __call__(self, layer: int) -> Optional[torch.Tensor]:
        shared = self.scale is None or self.scale.size(0) == 1
        if shared and self._shared is not None:
            return self._shared
        bias = self.bias
        if bias is not None:
            s = self.scale[0] if shared else self.scale[layer]
            bias = bias * s[None, :, None, None]
        mask = attention_mask(bias, self.padding_mask, self.dtype)
        if shared:
            self._shared = mask
        return mask


class ContextEncoder(nn.Module):
    """Layer norm + dropout (+ optional modality-specific 'prenet' blocks) before the shared blocks."""

    def __init__(self, cfg: Data2Vec2Config, modality_cfg: ModalityConfig, norm: bool = True):
        super().__init__()
        rates = np.linspace(modality_cfg.start_drop_path_rate, modality_cfg.end_drop_path_rate,
                            modality_cfg.prenet_depth)
        self.blocks = nn.ModuleList([make_block(cfg, float(r)) for r in rates])
        self.norm = (nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
                     if norm and not cfg.layer_norm_first else None)
        self.dropout = nn.Dropout(modality_cfg.prenet_dropout)
        self.layerdrop = modality_cfg.prenet_layerdrop

    def forward(self, x: torch.Tensor, masks: Optional[LayerMasks]) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x, _ = block(x, masks(i))
        return x


class ModalityEncoder(nn.Module):
    """Shared machinery; subclasses build ``local_encoder``, ``context_encoder`` (a
    ``ContextEncoder``) and ``decoder``, in that order (the reference's state-dict order),
    and implement ``local_features``.

    Subclasses may also override ``add_fixed_positions`` (added before masking, e.g. 2D
    sin-cos), ``relative_positions`` (computed on the masked sequence, e.g. a conv) and
    ``frame_padding_mask``.
    """

    def __init__(self, cfg: ModalityConfig, model_cfg: Data2Vec2Config):
        super().__init__()
        self.cfg = cfg
        self.modality_cfg = cfg  # the name the reference implementation and its tools use
        dim = model_cfg.embed_dim
        self.extra_tokens = None
        if cfg.num_extra_tokens > 0:
            self.extra_tokens = nn.Parameter(torch.zeros(1, cfg.num_extra_tokens, dim))

        heads = cfg.num_alibi_heads or model_cfg.num_heads
        layers = (cfg.model_depth or model_cfg.depth) + cfg.prenet_depth
        self.alibi_slopes = torch.tensor(alibi_slopes(heads)) if cfg.use_alibi_encoder else None
        self.alibi_scale = None
        if cfg.use_alibi_encoder:
            shape = (layers if cfg.learned_alibi_scale_per_layer else 1, 1,
                     heads if cfg.learned_alibi_scale_per_head else 1, 1, 1)
            self.alibi_scale = nn.Parameter(torch.full(shape, cfg.alibi_scale),
                                            requires_grad=cfg.learned_alibi_scale)
        self.mask_emb = nn.Parameter(torch.empty(dim).uniform_()) if model_cfg.encode_masked else None

    # ---- what a modality provides ------------------------------------------------------
    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        """Raw input -> (B, T, D) local features."""
        raise NotImplementedError

    def frame_padding_mask(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor],
                           num_frames: int) -> Optional[torch.Tensor]:
        """Input padding -> (B, T) token padding; None when nothing is padded."""
        return padding_mask

    def add_fixed_positions(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def relative_positions(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None

    @staticmethod
    def mask_sampler(cfg: ModalityConfig) -> MaskSampler:
        """The student masks, as a picklable callable (the data loader's workers sample them)."""
        return BlockMaskSampler(cfg.mask_prob, cfg.mask_length, cfg.mask_prob_adjust, cfg.inverse_mask)

    # The submodules that make the local features: the teacher keeps its own EMA copy of them
    # only with ``ema_local_encoder`` (otherwise it reads the student's local features).
    local_modules: Tuple[str, ...] = ("local_encoder",)

    # ---- shared ------------------------------------------------------------------------
    @property
    def num_extra_tokens(self) -> int:
        return 0 if self.extra_tokens is None else self.extra_tokens.size(1)

    def reset_parameters(self) -> None:
        """After the model's BERT init: default init for the decoder projection and the
        reference's init of the extra tokens."""
        if self.decoder is not None:
            for module in self.decoder.proj.modules():
                if isinstance(module, nn.Linear):
                    module.reset_parameters()
        if self.extra_tokens is not None:
            if self.cfg.init_extra_token_zero:
                nn.init.zeros_(self.extra_tokens)
            else:
                nn.init.normal_(self.extra_tokens)

    def _mask_frames(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1)
        if self.mask_emb is not None:
            return torch.where(m, self.mask_emb.to(x.dtype), x)
        if self.cfg.encoder_zero_mask:
            return x * (~m).to(x.dtype)
        return torch.where(m, torch.randn_like(x) * self.cfg.mask_noise_std, x)

    def contextualize(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor],
                      mask_info: Optional[MaskInfo], remove_masked: bool) -> Contextualized:
        """Positions, masking, dropping masked tokens (student), extra tokens, ALiBi, prenet.

        x: (R, T, D) local features (already repeated M times for the student).
        """
        R, T, D = x.shape
        x = self.add_fixed_positions(x)
        if mask_info is not None:
            x = self._mask_frames(x, mask_info.mask)
        if self.training and mask_info is not None and self.cfg.mask_channel_prob > 0:
            channels = sample_channel_mask(R, D, self.cfg.mask_channel_prob, self.cfg.mask_channel_length)
            x = x.masked_fill(channels.to(x.device).unsqueeze(1), 0.0)
        x_pos = self.relative_positions(x, padding_mask)
        if mask_info is not None and remove_masked:
            index = mask_info.ids_keep.unsqueeze(-1).expand(-1, -1, D)
            x = x.gather(1, index)
            if x_pos is not None:
                x = x + x_pos.gather(1, index)
            positions = mask_info.ids_keep
            if padding_mask is not None:
                padding_mask = padding_mask.gather(1, mask_info.ids_keep)
        else:
            if x_pos is not None:
                x = x + x_pos
            positions = torch.arange(T, device=x.device).expand(R, T)
        if padding_mask is not None and not padding_mask.any():
            padding_mask = None

        bias = scale = None
        if self.alibi_scale is not None:
            bias = alibi_bias(positions, self.alibi_slopes.to(x.device)[None, :])
            scale = self.alibi_scale.clamp_min(0).float().reshape(self.alibi_scale.size(0), -1)
        extra = self.num_extra_tokens
        if extra > 0:
            x = torch.cat([self.extra_tokens.to(x.dtype).expand(R, -1, -1), x], dim=1)
            if padding_mask is not None:
                padding_mask = F.pad(padding_mask, (extra, 0))
            if bias is not None:
                bias = F.pad(bias, (extra, 0, extra, 0))
        prenet_depth = len(self.context_encoder.blocks)
        if prenet_depth > 0:
            x = self.context_encoder(x, LayerMasks(bias, scale, padding_mask, x.dtype))
        else:
            x = self.context_encoder(x, None)
        if scale is not None and prenet_depth > 0 and scale.size(0) > 1:
            scale = scale[prenet_depth:]
        return Contextualized(x, padding_mask, bias, scale)

    def decoder_input(self, x: torch.Tensor, mask_info: MaskInfo) -> torch.Tensor:
        """Put kept tokens back at their positions, Gaussian noise at masked ones: (R, T, D)."""
        x = nn.functional.dropout(x, self.cfg.decoder.input_dropout, training=self.training)
        num_masked = mask_info.ids_restore.size(1) - x.size(1)
        if num_masked > 0:
            noise = x.new_empty(x.size(0), num_masked, x.size(-1)).normal_(0, self.cfg.mask_noise_std)
            x = torch.cat([x, noise], dim=1)
            x = x.gather(1, mask_info.ids_restore.unsqueeze(-1).expand(-1, -1, x.size(-1)))
        return x

    def decode(self, x: torch.Tensor, mask_info: MaskInfo) -> torch.Tensor:
        """Student output (R, extra + K, D) -> predictions at every position (R, T, D)."""
        return self.decoder(self.decoder_input(x[:, self.num_extra_tokens:], mask_info))
