"""Text modality: BPE token embedding + learned positions (the paper's language model).

Parameter names and layout are the reference implementation's (``local_encoder.embed_tokens``,
``local_encoder.embed_positions``, ``local_encoder.layernorm_embedding``; a context encoder
without a layer norm when there is no prenet; ``Decoder1d`` without residuals and with two
projection layers), so its text checkpoints load unchanged.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
from fairseq.modules import FairseqDropout, PositionalEmbedding

from .config import Data2Vec2Config, TextModalityConfig
from .decoder import Decoder1d
from .modality import ContextEncoder, ModalityEncoder


class TextLocalEncoder(nn.Module):
    """Tokens (B, T) -> (B, T, D): embedding (x scale) + learned positions -> LayerNorm -> dropout.

    Positions are fairseq's: the i-th non-pad token gets position ``pad + i`` (1-based), pad
    tokens get the all-zero row ``pad``; so the table has ``max_source_positions + pad + 1`` rows.
    """

    def __init__(self, vocab_size: int, embed_dim: int, pad: int, cfg: TextModalityConfig):
        super().__init__()
        self.pad = pad
        self.max_source_positions = cfg.max_source_positions
        self.embed_tokens = nn.Embedding(vocab_size, embed_dim, pad)
        self.embed_scale = 1.0 if cfg.no_scale_embedding else math.sqrt(embed_dim)
        self.embed_positions = (
            None if cfg.no_token_positional_embeddings
            else PositionalEmbedding(cfg.max_source_positions, embed_dim, pad, learned=cfg.learned_pos))
        self.layernorm_embedding = nn.LayerNorm(embed_dim) if cfg.layernorm_embedding else None
        self.dropout_module = FairseqDropout(cfg.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_scale * self.embed_tokens(tokens)            # (B, T, D)
        if self.embed_positions is not None:
            x = x + self.embed_positions(tokens)                     # (B, T, D)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        return self.dropout_module(x)


class TextEncoder(ModalityEncoder):
    """Token ids (B, T) -> (B, T, D); padding comes from the ``<pad>`` tokens.

    The vocabulary size and the pad index come from ``task.source_dictionary`` (a fairseq
    ``Dictionary``, with ``<mask>`` appended as fairseq's ``masked_lm`` does).
    """

    def __init__(self, cfg: TextModalityConfig, model_cfg: Data2Vec2Config, task=None):
        super().__init__(cfg, model_cfg)
        dictionary = getattr(task, "source_dictionary", None) if task is not None else None
        if dictionary is None:
            raise ValueError("the TEXT modality needs a task with a source_dictionary (its size "
                             "and <pad> index shape the embedding), e.g. data2vec_text_pretraining")
        self.pad = dictionary.pad()
        self.vocab_size = len(dictionary)
        dim = model_cfg.embed_dim
        self.local_encoder = TextLocalEncoder(self.vocab_size, dim, self.pad, cfg)
        # The reference has no context layer norm (and no dropout) without prenet blocks.
        self.context_encoder = ContextEncoder(model_cfg, cfg, norm=cfg.prenet_depth > 0)
        if cfg.prenet_depth == 0:
            self.context_encoder.dropout = nn.Dropout(0.0)
        self.decoder = Decoder1d(cfg.decoder, dim)

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> embedded tokens with positions (B, T, D)."""
        if source.dim() != 2 or source.is_floating_point():
            raise ValueError(f"TEXT input must be (batch, tokens) integer ids, got "
                             f"{tuple(source.shape)} {source.dtype}")
        if source.size(1) > self.cfg.max_source_positions:
            raise ValueError(f"input of {source.size(1)} tokens is longer than "
                             f"max_source_positions={self.cfg.max_source_positions}: lower "
                             f"task.tokens_per_sample or raise model.modalities.text.max_source_positions")
        if source.numel() > 0 and (int(source.min()) < 0 or int(source.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}) (the dictionary's size), "
                             f"got [{int(source.min())}, {int(source.max())}]: was the data "
                             f"binarized with another dict.txt?")
        return self.local_encoder(source)

    def frame_padding_mask(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor],
                           num_frames: int) -> Optional[torch.Tensor]:
        """One token per position: the given mask, else ``source == <pad>`` (None if no pad)."""
        if padding_mask is None:
            padding_mask = source.eq(self.pad)
            return padding_mask if bool(padding_mask.any()) else None
        if tuple(padding_mask.shape) != tuple(source.shape):
            raise ValueError(f"padding_mask {tuple(padding_mask.shape)} must have the shape of the "
                             f"tokens {tuple(source.shape)}")
        return padding_mask.bool()
