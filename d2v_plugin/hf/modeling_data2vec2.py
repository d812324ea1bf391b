"""data2vec 2.0 encoder (audio, image, text) as a Hugging Face ``transformers`` model.

Standalone on purpose: this file needs only torch and transformers. ``d2v-export-hf`` copies
it next to ``config.json`` and ``model.safetensors``, so that
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` works without fairseq or
d2v_plugin. It re-implements the *encoder* of the ``data2vec_multi`` model (the student
without masking): local encoder, positions, ALiBi, context encoder / prenet, blocks. The
EMA teacher and the pretraining decoder are not part of it. Parameter names keep the fairseq
layout (``modality_encoders.<MODALITY>.*``, ``blocks.*``) so a checkpoint's state dict maps
onto it key for key.

Outputs follow transformers: ``last_hidden_state`` (B, E + T, D) -- extra (CLS) tokens first,
as fairseq's ``extract_features(..., remove_extra_tokens=False)`` --, ``hidden_states`` (the
context encoder's output, then each block's output) with ``output_hidden_states=True``, and
``padding_mask`` (B, E + T), True at padded positions (None when nothing is padded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

MODALITIES = ("AUDIO", "IMAGE", "TEXT")
MAIN_INPUT = {"AUDIO": "input_values", "IMAGE": "pixel_values", "TEXT": "input_ids"}


class Data2Vec2Config(PretrainedConfig):
    """The encoder's shape; ``d2v-export-hf`` fills it from a checkpoint's ``cfg.model``.

    Dropout values only act in training mode; inference never uses them.
    """

    model_type = "data2vec2_multi"

    def __init__(self, modality: str = "AUDIO", hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072,
                 layer_norm_eps: float = 1e-5, norm_affine: bool = True, layer_norm_first: bool = False,
                 hidden_dropout: float = 0.1, attention_dropout: float = 0.1,
                 activation_dropout: float = 0.0, post_mlp_dropout: float = 0.1,
                 # context encoder (shared by the modalities)
                 prenet_depth: int = 0, context_norm: bool = True, context_dropout: float = 0.1,
                 num_extra_tokens: int = 0,
                 use_alibi: bool = True, num_alibi_heads: Optional[int] = None,
                 alibi_scale_shape: Sequence[int] = (1, 1, 12, 1, 1),
                 # AUDIO
                 conv_layers: Sequence[Sequence[int]] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2,
                 extractor_mode: str = "layer_norm", conv_pos_width: int = 95,
                 conv_pos_depth: int = 5, conv_pos_groups: int = 16, conv_pos_zero_padding: bool = False,
                 # IMAGE
                 image_size: int = 224, num_channels: int = 3, patch_size: int = 16,
                 fixed_positions: bool = True,
                 # TEXT (vocab_size is the CTC head's output size for Data2Vec2ForCTC)
                 vocab_size: int = 0, pad_token_id: Optional[int] = None,
                 max_position_embeddings: int = 512, scale_embedding: bool = False,
                 layernorm_embedding: bool = True, token_positional_embeddings: bool = True,
                 text_dropout: float = 0.1,
                 # CTC head
                 final_dropout: float = 0.0, ctc_blank_id: int = 0,
                 **kwargs):
        modality = modality.upper()
        if modality not in MODALITIES:
            raise ValueError(f"modality={modality!r}: expected one of {MODALITIES}")
        if extractor_mode not in ("layer_norm", "default"):
            raise ValueError(f"extractor_mode={extractor_mode!r}: expected 'layer_norm' or 'default'")
        self.modality = modality
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size = num_attention_heads, intermediate_size
        self.layer_norm_eps, self.norm_affine, self.layer_norm_first = layer_norm_eps, norm_affine, layer_norm_first
        self.hidden_dropout, self.attention_dropout = hidden_dropout, attention_dropout
        self.activation_dropout, self.post_mlp_dropout = activation_dropout, post_mlp_dropout
        self.prenet_depth, self.context_norm, self.context_dropout = prenet_depth, context_norm, context_dropout
        self.num_extra_tokens = num_extra_tokens
        self.use_alibi, self.num_alibi_heads = use_alibi, num_alibi_heads
        self.alibi_scale_shape = [int(s) for s in alibi_scale_shape]
        self.conv_layers = [[int(v) for v in layer] for layer in conv_layers]
        self.extractor_mode = extractor_mode
        self.conv_pos_width, self.conv_pos_depth, self.conv_pos_groups = conv_pos_width, conv_pos_depth, conv_pos_groups
        self.conv_pos_zero_padding = conv_pos_zero_padding
        self.image_size, self.num_channels, self.patch_size = image_size, num_channels, patch_size
        self.fixed_positions = fixed_positions
        self.vocab_size, self.max_position_embeddings = vocab_size, max_position_embeddings
        self.scale_embedding, self.layernorm_embedding = scale_embedding, layernorm_embedding
        self.token_positional_embeddings, self.text_dropout = token_positional_embeddings, text_dropout
        self.final_dropout, self.ctc_blank_id = final_dropout, ctc_blank_id
        # the pipelines' chunking reads this: input samples per output frame (audio)
        self.inputs_to_logits_ratio = math.prod(layer[2] for layer in self.conv_layers)
        super().__init__(pad_token_id=pad_token_id, **kwargs)


@dataclass
class Data2Vec2ModelOutput(BaseModelOutput):
    """``BaseModelOutput`` plus ``padding_mask`` (B, E + T), True at padded positions, or None."""

    padding_mask: Optional[torch.Tensor] = None


@dataclass
class Data2Vec2CTCOutput(CausalLMOutput):
    """``CausalLMOutput`` (logits (B, T, V)) plus the frame ``padding_mask`` (B, T) or None."""

    padding_mask: Optional[torch.Tensor] = None


# ---- building blocks (layouts of fairseq's modules, so state-dict keys match) -------------
class TransposeLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class SamePad(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove > 0 else x


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
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, C)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop1(self.act(self.fc1(x))))


class Block(nn.Module):
    """Post-LN (published models): ``x = norm1(x + attn(x)); x = norm2(x + mlp(x))``;
    pre-LN: ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``."""

    def __init__(self, config: Data2Vec2Config):
        super().__init__()
        dim = config.hidden_size
        self.layer_norm_first = config.layer_norm_first
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps, elementwise_affine=config.norm_affine)
        self.attn = Attention(dim, config.num_attention_heads, config.attention_dropout, config.hidden_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps, elementwise_affine=config.norm_affine)
        self.mlp = Mlp(dim, config.intermediate_size, config.activation_dropout)
        self.post_mlp_dropout = nn.Dropout(config.post_mlp_dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.attn(self.norm1(x), mask)
            return x + self.post_mlp_dropout(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.post_mlp_dropout(self.mlp(x)))


def alibi_slopes(num_heads: int) -> List[float]:
    """ALiBi head slopes 2^(-8/n), 2^(-16/n), ...; interleaved for non powers of two."""
    def power_of_two_slopes(n: int) -> List[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two_slopes(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two_slopes(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


class LayerMasks:
    """Additive attention mask of layer i: ALiBi bias x that layer's scale, plus padding."""

    def __init__(self, bias: Optional[torch.Tensor], scale: Optional[torch.Tensor],
                 padding_mask: Optional[torch.Tensor], dtype: torch.dtype):
        self.bias, self.scale, self.dtype = bias, scale, dtype
        self.pad = None
        if padding_mask is not None:
            pad = torch.zeros(padding_mask.shape, dtype=dtype, device=padding_mask.device)
            self.pad = pad.masked_fill_(padding_mask, float("-inf"))[:, None, None, :]

    def __call__(self, layer: int) -> Optional[torch.Tensor]:
        bias = self.bias
        if bias is not None:
            s = self.scale[0] if self.scale.size(0) == 1 else self.scale[layer]
            bias = (bias * s[None, :, None, None]).to(self.dtype)
        if self.pad is None:
            return bias
        return self.pad if bias is None else bias + self.pad


class ContextEncoder(nn.Module):
    """Layer norm + dropout + the modality's prenet blocks, before the shared blocks."""

    def __init__(self, config: Data2Vec2Config):
        super().__init__()
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.prenet_depth)])
        self.norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps,
                                  elementwise_affine=config.norm_affine)
                     if config.context_norm else None)
        self.dropout = nn.Dropout(config.context_dropout)

    def forward(self, x: torch.Tensor, masks: LayerMasks) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        for i, block in enumerate(self.blocks):
            x = block(x, masks(i))
        return x


# ---- modality encoders: raw input -> (B, E + T, D) tokens for the shared blocks -----------
class ModalityEncoder(nn.Module):
    def __init__(self, config: Data2Vec2Config):
        super().__init__()
        self.config = config
        self.extra_tokens = (nn.Parameter(torch.zeros(1, config.num_extra_tokens, config.hidden_size))
                             if config.num_extra_tokens > 0 else None)
        self.alibi_scale = (nn.Parameter(torch.ones(config.alibi_scale_shape))
                            if config.use_alibi else None)

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def frame_padding_mask(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor],
                           num_frames: int) -> Optional[torch.Tensor]:
        return padding_mask

    def positions(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        return x

    def contextualize(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]):
        """(B, T, D) local features -> (tokens (B, E + T, D), padding (B, E + T) | None, masks)."""
        B, T, _ = x.shape
        x = self.positions(x, padding_mask)
        if padding_mask is not None and not padding_mask.any():
            padding_mask = None
        bias = scale = None
        if self.alibi_scale is not None:
            heads = self.config.num_alibi_heads or self.config.num_attention_heads
            slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float32, device=x.device)
            pos = torch.arange(T, device=x.device, dtype=torch.float32)
            distance = (pos[:, None] - pos[None, :]).abs().neg_()                 # (T, T)
            bias = distance[None, None] * slopes[None, :, None, None]              # (1, H, T, T)
            scale = self.alibi_scale.clamp_min(0).float().reshape(self.alibi_scale.size(0), -1)
        extra = self.config.num_extra_tokens
        if extra > 0:
            x = torch.cat([self.extra_tokens.to(x.dtype).expand(B, -1, -1), x], dim=1)
            if padding_mask is not None:
                padding_mask = F.pad(padding_mask, (extra, 0))
            if bias is not None:
                bias = F.pad(bias, (extra, 0, extra, 0))
        x = self.context_encoder(x, LayerMasks(bias, scale, padding_mask, x.dtype))
        prenet = self.config.prenet_depth
        if scale is not None and prenet > 0 and scale.size(0) > 1:
            scale = scale[prenet:]
        return x, padding_mask, LayerMasks(bias, scale, padding_mask, x.dtype)


class ConvFeatureExtractor(nn.Module):
    """fairseq's ``ConvFeatureExtractionModel`` (conv_bias=False): waveform -> (B, C, T)."""

    def __init__(self, conv_layers: Sequence[Sequence[int]], mode: str):
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_d = 1
        for i, (dim, kernel, stride) in enumerate(conv_layers):
            conv = nn.Conv1d(in_d, dim, kernel, stride=stride, bias=False)
            if mode == "layer_norm":
                norm = nn.Sequential(TransposeLast(), nn.LayerNorm(dim), TransposeLast())
                layer = nn.Sequential(conv, nn.Dropout(0.0), norm, nn.GELU())
            elif i == 0:
                layer = nn.Sequential(conv, nn.Dropout(0.0), nn.GroupNorm(dim, dim, affine=True), nn.GELU())
            else:
                layer = nn.Sequential(conv, nn.Dropout(0.0), nn.GELU())
            self.conv_layers.append(layer)
            in_d = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class AudioEncoder(ModalityEncoder):
    """Waveform (B, S) -> 50 Hz frames + conv positional encoder + ALiBi."""

    def __init__(self, config: Data2Vec2Config):
        super().__init__(config)
        dim, conv_dim = config.hidden_size, config.conv_layers[-1][0]
        self.local_encoder = ConvFeatureExtractor(config.conv_layers, config.extractor_mode)
        self.project_features = nn.Sequential(TransposeLast(), nn.LayerNorm(conv_dim), nn.Linear(conv_dim, dim))
        kernel = max(3, config.conv_pos_width // config.conv_pos_depth)
        self.relative_positional_encoder = nn.Sequential(
            TransposeLast(),
            *[nn.Sequential(
                nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=config.conv_pos_groups),
                SamePad(kernel), TransposeLast(), nn.LayerNorm(dim, elementwise_affine=False),
                TransposeLast(), nn.GELU()) for _ in range(config.conv_pos_depth)],
            TransposeLast(),
        )
        self.context_encoder = ContextEncoder(config)

    def receptive_field(self) -> int:
        field, jump = 1, 1
        for _, kernel, stride in self.config.conv_layers:
            field += (kernel - 1) * jump
            jump *= stride
        return field

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        if source.dim() != 2 or not source.is_floating_point():
            raise ValueError(f"AUDIO input_values must be float waveforms (batch, samples), got "
                             f"{tuple(source.shape)} {source.dtype}")
        if source.size(-1) < self.receptive_field():
            raise ValueError(f"input of {source.size(-1)} samples is shorter than the feature "
                             f"encoder's receptive field ({self.receptive_field()} samples)")
        return self.project_features(self.local_encoder(source))

    def frame_padding_mask(self, source, padding_mask, num_frames):
        if padding_mask is None:
            return None
        lengths = (~padding_mask).sum(-1)
        for _, kernel, stride in self.config.conv_layers:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        lengths = lengths.clamp_min(0)
        return torch.arange(num_frames, device=padding_mask.device)[None, :] >= lengths[:, None]

    def positions(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if not self.config.conv_pos_zero_padding or padding_mask is None or not padding_mask.any():
            return x + self.relative_positional_encoder(x)
        keep = (~padding_mask).unsqueeze(1).to(x.dtype)  # padded frames are zeros before every conv
        h = x.transpose(1, 2)
        for layer in self.relative_positional_encoder[1:-1]:
            h = layer(h * keep)
        return x + h.transpose(1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, config: Data2Vec2Config):
        super().__init__()
        self.image_size = config.image_size
        self.proj = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                              stride=config.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"expected pixel_values (B, C, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class FixedPositionalEncoder(nn.Module):
    def __init__(self, num_patches: int, dim: int):
        super().__init__()
        self.positions = nn.Parameter(torch.zeros(1, num_patches, dim), requires_grad=False)


class ImageEncoder(ModalityEncoder):
    """Image (B, C, H, W) -> patch tokens + fixed 2D sin-cos positions + CLS + prenet."""

    def __init__(self, config: Data2Vec2Config):
        super().__init__(config)
        self.local_encoder = PatchEmbed(config)
        grid = config.image_size // config.patch_size
        self.fixed_positional_encoder = (FixedPositionalEncoder(grid * grid, config.hidden_size)
                                         if config.fixed_positions else None)
        self.context_encoder = ContextEncoder(config)

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        return self.local_encoder(source)

    def positions(self, x: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        if self.fixed_positional_encoder is None:
            return x
        return x + self.fixed_positional_encoder.positions.to(x.dtype)


class TextLocalEncoder(nn.Module):
    """Token embedding + fairseq's learned positions (the i-th non-pad token at ``pad + i``)."""

    def __init__(self, config: Data2Vec2Config):
        super().__init__()
        dim, pad = config.hidden_size, config.pad_token_id
        self.pad = pad
        self.embed_tokens = nn.Embedding(config.vocab_size, dim, pad)
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_positions = (nn.Embedding(config.max_position_embeddings + pad + 1, dim, pad)
                                if config.token_positional_embeddings else None)
        self.layernorm_embedding = nn.LayerNorm(dim) if config.layernorm_embedding else None
        self.dropout = nn.Dropout(config.text_dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_scale * self.embed_tokens(tokens)
        if self.embed_positions is not None:
            mask = tokens.ne(self.pad).int()
            positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.pad
            x = x + self.embed_positions(positions)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        return self.dropout(x)


class TextEncoder(ModalityEncoder):
    """Token ids (B, T) -> embeddings; padding from the attention mask, else the pad token."""

    def __init__(self, config: Data2Vec2Config):
        super().__init__(config)
        self.local_encoder = TextLocalEncoder(config)
        self.context_encoder = ContextEncoder(config)

    def local_features(self, source: torch.Tensor) -> torch.Tensor:
        if source.dim() != 2 or source.is_floating_point():
            raise ValueError(f"TEXT input_ids must be (batch, tokens) integer ids, got "
                             f"{tuple(source.shape)} {source.dtype}")
        if source.size(1) > self.config.max_position_embeddings:
            raise ValueError(f"input of {source.size(1)} tokens is longer than "
                             f"max_position_embeddings={self.config.max_position_embeddings}")
        return self.local_encoder(source)

    def frame_padding_mask(self, source, padding_mask, num_frames):
        if padding_mask is None:
            padding_mask = source.eq(self.config.pad_token_id)
            return padding_mask if bool(padding_mask.any()) else None
        return padding_mask


ENCODERS = {"AUDIO": AudioEncoder, "IMAGE": ImageEncoder, "TEXT": TextEncoder}


# ---- transformers models -------------------------------------------------------------------
class Data2Vec2PreTrainedModel(PreTrainedModel):
    config_class = Data2Vec2Config
    base_model_prefix = "data2vec2"
    main_input_name = "input_values"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Only for models built from a config (weights loaded from a checkpoint replace it)."""
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and module.weight is not None:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class Data2Vec2Model(Data2Vec2PreTrainedModel):
    """The data2vec 2.0 encoder. Call with the modality's input (``input_values`` waveforms
    (B, S), ``pixel_values`` (B, C, H, W) or ``input_ids`` (B, T)) and an optional
    ``attention_mask`` (1 = real sample / token, 0 = padding)."""

    def __init__(self, config: Data2Vec2Config):
        super().__init__(config)
        self.main_input_name = MAIN_INPUT[config.modality]
        self.modality_encoders = nn.ModuleDict({config.modality: ENCODERS[config.modality](config)})
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.num_hidden_layers)])
        self.norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps,
                                  elementwise_affine=config.norm_affine)
                     if config.layer_norm_first else None)
        self.post_init()

    @property
    def encoder(self) -> ModalityEncoder:
        return self.modality_encoders[self.config.modality]

    def forward(self, input_values: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                input_ids: Optional[torch.Tensor] = None, pixel_values: Optional[torch.Tensor] = None,
                **kwargs):
        given = [t for t in (input_values, input_ids, pixel_values) if t is not None]
        if len(given) != 1:
            raise ValueError(f"pass exactly one of input_values / pixel_values / input_ids "
                             f"(this {self.config.modality} model reads {self.main_input_name})")
        source = given[0]
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        padding_mask = None if attention_mask is None else ~attention_mask.bool()
        if padding_mask is not None and tuple(padding_mask.shape) != tuple(source.shape[:2]):
            raise ValueError(f"attention_mask {tuple(padding_mask.shape)} must have the shape of the "
                             f"input's first two dimensions {tuple(source.shape[:2])}")

        encoder = self.encoder
        local = encoder.local_features(source)                                    # (B, T, D)
        frame_padding = encoder.frame_padding_mask(source, padding_mask, local.size(1))
        x, padding, masks = encoder.contextualize(local, frame_padding)           # (B, E+T, D)
        hidden_states = [x]
        for i, block in enumerate(self.blocks):
            x = block(x, masks(i))
            hidden_states.append(x)
        if self.norm is not None:
            x = self.norm(x)
        hidden = tuple(hidden_states) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (x, hidden, padding) if v is not None)
        return Data2Vec2ModelOutput(last_hidden_state=x, hidden_states=hidden, padding_mask=padding)


class Data2Vec2ForCTC(Data2Vec2PreTrainedModel):
    """Audio encoder + linear CTC head: fairseq's ``wav2vec_ctc`` over ``data2vec_multi``.

    Padded frames get the blank as the only possible label, as fairseq's ``get_logits`` does.
    Inference only: passing ``labels`` is refused.
    """

    def __init__(self, config: Data2Vec2Config):
        super().__init__(config)
        if config.modality != "AUDIO":
            raise ValueError(f"Data2Vec2ForCTC needs an AUDIO model, got {config.modality}")
        self.data2vec2 = Data2Vec2Model(config)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_values: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                labels: Optional[torch.Tensor] = None, **kwargs):
        if labels is not None:
            raise NotImplementedError("Data2Vec2ForCTC is exported for inference; training with "
                                      "labels is not supported (fine-tune with fairseq)")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.data2vec2(input_values, attention_mask=attention_mask,
                             output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.lm_head(self.dropout(out.last_hidden_state))               # (B, T, V)
        padding = out.padding_mask
        if padding is not None and padding.any():
            only_blank = torch.full((logits.size(-1),), float("-inf"), dtype=logits.dtype,
                                    device=logits.device)
            only_blank[self.config.ctc_blank_id] = 0
            logits = logits.clone()
            logits[padding] = only_blank
        if not return_dict:
            return tuple(v for v in (logits, out.hidden_states, padding) if v is not None)
        return Data2Vec2CTCOutput(logits=logits, hidden_states=out.hidden_states, padding_mask=padding)
