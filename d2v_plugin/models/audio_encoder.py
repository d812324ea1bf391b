"""Audio modality: conv feature encoder + conv positional encoder + ALiBi (the paper's speech model)."""
from typing import Optional

import torch
import torch.nn as nn
from fairseq.models.wav2vec.wav2vec2 import ConvFeatureExtractionModel
from fairseq.modules import GradMultiply, SamePad, TransposeLast

from ..audio_frames import feature_lengths, parse_conv_spec, receptive_field
from .config import AudioModalityConfig, Data2Vec2Config
from .decoder import Decoder1d
from .modality import ContextEncoder, ModalityEncoder


class AudioEncoder(ModalityEncoder):
    """Waveform -> 50 Hz frames; positions come from a conv over the (masked) frames."""

    local_modules = ("local_encoder", "project_features")

    def __init__(self, cfg: AudioModalityConfig, model_cfg: Data2Vec2Config, task=None):
        super().__init__(cfg, model_cfg)
        if cfg.conv_pos_pre_ln:
            raise NotImplementedError("conv_pos_pre_ln=true is not supported")
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

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        """Waveform (B, S) -> projected conv features (B, T, D)."""
        if source.size(-1) < self.receptive_field:
            raise ValueError(f"input of {source.size(-1)} samples is shorter than the feature "
                             f"encoder's receptive field ({self.receptive_field} samples)")
        features = self.local_encoder(source)  # (B, C, T)
        if self.cfg.local_grad_mult != 1.0:
            features = GradMultiply.apply(features, self.cfg.local_grad_mult)
        return self.project_features(features)

    def frame_padding_mask(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor],
                           num_frames: int) -> Optional[torch.Tensor]:
        """Sample-level padding (B, S) -> frame-level padding (B, T); None stays None."""
        if padding_mask is None:
            return None
        lengths = feature_lengths((~padding_mask).sum(-1), self.conv_spec)
        return torch.arange(num_frames, device=padding_mask.device)[None, :] >= lengths[:, None]

    def relative_positions(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, T, D) -> (B, T, D). The reference convolves over padded frames too, so the end of
        an utterance depends on how much padding its batch gave it (measured: a fine-tuned CTC
        model's letter error moves by 8 points between batched and one-by-one decoding);
        ``conv_pos_zero_padding`` zeroes them before every conv, which equals the unpadded run."""
        if not self.cfg.conv_pos_zero_padding or padding_mask is None or not padding_mask.any():
            return self.relative_positional_encoder(x)
        keep = (~padding_mask).unsqueeze(1).to(x.dtype)                       # (B, 1, T)
        h = x.transpose(1, 2)
        for layer in self.relative_positional_encoder[1:-1]:                  # between the TransposeLasts
            h = layer(h * keep)
        return h.transpose(1, 2)
