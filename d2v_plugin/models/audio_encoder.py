"""Audio modality: conv feature encoder, conv positional encoder, ALiBi, masking, decoder input."""
from typing import List, NamedTuple, Optional

import numpy as np
import torch
import torch.nn as nn
from fairseq.models.wav2vec.wav2vec2 import ConvFeatureExtractionModel
from fairseq.modules import GradMultiply, SamePad, TransposeLast

from ..masking import MaskInfo, feature_lengths, parse_conv_spec, receptive_field, sample_channel_mask
from .alibi import alibi_bias, alibi_slopes
from .blocks import Block, attention_mask
from .config import AudioModalityConfig, Data2Vec2Config
from .decoder import Decoder1d


class Contextualized(NamedTuple):
    """Input of the shared blocks.

    x:            (R, K, D) tokens (K = kept frames for the student, T for the teacher).
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


class ContextEncoder(nn.Module):
    """Layer norm + dropout (+ optional modality-specific 'prenet' blocks) before the shared blocks."""

    def __init__(self, cfg: Data2Vec2Config, modality_cfg: AudioModalityConfig):
        super().__init__()
        rates = np.linspace(modality_cfg.start_drop_path_rate, modality_cfg.end_drop_path_rate,
                            modality_cfg.prenet_depth)
        self.blocks = nn.ModuleList([make_block(cfg, float(r)) for r in rates])
        self.norm = (None if cfg.layer_norm_first
                     else nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine))
        self.dropout = nn.Dropout(modality_cfg.prenet_dropout)
        self.layerdrop = modality_cfg.prenet_layerdrop

    def forward(self, x: torch.Tensor, masks: Optional["LayerMasks"]) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            if self.training and self.layerdrop > 0 and float(torch.rand(())) < self.layerdrop:
                continue
            x, _ = block(x, masks(i))
        return x


class AudioEncoder(nn.Module):
    """Everything audio-specific, with the reference implementation's parameter names."""

    def __init__(self, cfg: AudioModalityConfig, model_cfg: Data2Vec2Config):
        super().__init__()
        if cfg.conv_pos_pre_ln:
            raise NotImplementedError("conv_pos_pre_ln=true is not supported")
        self.cfg = cfg
        self.modality_cfg = cfg  # name used by the reference implementation and its tools
        dim = model_cfg.embed_dim
        self.conv_spec = parse_conv_spec(cfg.feature_encoder_spec)
        self.receptive_field = receptive_field(self.conv_spec)
        self.local_encoder = ConvFeatureExtractionModel(
            self.conv_spec, dropout=0.0, mode=cfg.extractor_mode, conv_bias=False)
        conv_dim = self.conv_spec[-1][0]
        self.project_features = nn.Sequential(TransposeLast(), nn.LayerNorm(conv_dim), nn.Linear(conv_dim, dim))

        kernel = max(3, cfg.conv_pos_width // cfg.conv_pos_depth)
        self.relative_positional_encoder = nn.Sequential(
            TransposeLast(),
            *[nn.Sequential(
                nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=cfg.conv_pos_groups),
                SamePad(kernel), TransposeLast(), nn.LayerNorm(dim, elementwise_affine=False),
                TransposeLast(), nn.GELU()) for _ in range(cfg.conv_pos_depth)],
            TransposeLast(),
        )
        self.context_encoder = ContextEncoder(model_cfg, cfg)
        self.decoder = Decoder1d(cfg.decoder, dim)

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

    def reset_parameters(self) -> None:
        """Default (not BERT) init for the decoder projection, as the reference does."""
        if self.decoder is not None:
            for module in self.decoder.proj.modules():
                if isinstance(module, nn.Linear):
                    module.reset_parameters()

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        """Waveform (B, S) -> projected conv features (B, T, D)."""
        if source.size(-1) < self.receptive_field:
            raise ValueError(f"input of {source.size(-1)} samples is shorter than the feature "
                             f"encoder's receptive field ({self.receptive_field} samples)")
        features = self.local_encoder(source)  # (B, C, T)
        if self.cfg.local_grad_mult != 1.0:
            features = GradMultiply.apply(features, self.cfg.local_grad_mult)
        return self.project_features(features)

    def frame_padding_mask(self, padding_mask: Optional[torch.Tensor], num_frames: int):
        """Sample-level padding (B, S) -> frame-level padding (B, T); None stays None."""
        if padding_mask is None:
            return None
        lengths = feature_lengths((~padding_mask).sum(-1), self.conv_spec)
        return torch.arange(num_frames, device=padding_mask.device)[None, :] >= lengths[:, None]

    def _mask_frames(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1)
        if self.mask_emb is not None:
            return torch.where(m, self.mask_emb.to(x.dtype), x)
        if self.cfg.encoder_zero_mask:
            return x * (~m).to(x.dtype)
        return torch.where(m, torch.randn_like(x) * self.cfg.mask_noise_std, x)

    def contextualize(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor],
                      mask_info: Optional[MaskInfo], remove_masked: bool) -> Contextualized:
        """Mask, add conv positions, drop masked frames (student), build the ALiBi bias.

        x: (R, T, D) local features (already repeated M times for the student).
        """
        R, T, D = x.shape
        if mask_info is not None:
            x = self._mask_frames(x, mask_info.mask)
        if self.training and mask_info is not None and self.cfg.mask_channel_prob > 0:
            channels = sample_channel_mask(R, D, self.cfg.mask_channel_prob, self.cfg.mask_channel_length)
            x = x.masked_fill(channels.to(x.device).unsqueeze(1), 0.0)
        x_pos = self.relative_positional_encoder(x)
        if mask_info is not None and remove_masked:
            index = mask_info.ids_keep.unsqueeze(-1).expand(-1, -1, D)
            x = x.gather(1, index) + x_pos.gather(1, index)
            positions = mask_info.ids_keep
            if padding_mask is not None:
                padding_mask = padding_mask.gather(1, mask_info.ids_keep)
        else:
            x = x + x_pos
            positions = torch.arange(T, device=x.device).expand(R, T)
        if padding_mask is not None and not padding_mask.any():
            padding_mask = None

        bias = scale = None
        if self.alibi_scale is not None:
            bias = alibi_bias(positions, self.alibi_slopes.to(x.device)[None, :])
            scale = self.alibi_scale.clamp_min(0).float().reshape(self.alibi_scale.size(0), -1)
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
        return self.decoder(self.decoder_input(x, mask_info))


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
