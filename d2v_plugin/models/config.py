"""Configuration of the data2vec 2.0 model.

Field names mirror the reference implementation's ``data2vec_multi`` config so that its
checkpoints, configs and fairseq's ``wav2vec_ctc`` overrides (which set ``mask_prob``,
``encoder_dropout``... by name) apply unchanged. Defaults are the paper's base audio values.
"""
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

BASE_AUDIO_CONV_SPEC = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"


@dataclass
class DecoderConfig(FairseqDataclass):
    decoder_dim: int = field(default=384, metadata={"help": "channels of the conv decoder"})
    decoder_groups: int = field(default=16, metadata={"help": "groups of each decoder conv"})
    decoder_kernel: int = field(default=7, metadata={"help": "kernel width of each decoder conv"})
    decoder_layers: int = field(
        default=4, metadata={"help": "conv layers; 0 gives a single linear head (data2vec 1.0)"})
    input_dropout: float = field(default=0.1, metadata={"help": "dropout on the decoder input"})
    decoder_residual: bool = field(
        default=True, metadata={"help": "residual connections between decoder layers of equal width"})
    projection_layers: int = field(default=1, metadata={"help": "linear layers after the convs"})
    projection_ratio: float = field(
        default=2.0, metadata={"help": "width multiplier of the first of several projection layers"})


@dataclass
class ModalityConfig(FairseqDataclass):
    """What every modality encoder has: masking, prenet, extra tokens, ALiBi, decoder.

    Defaults are the audio ones; each modality's subclass restates the fields whose paper
    default differs.
    """

    type: str = "AUDIO"
    prenet_depth: int = field(default=0, metadata={"help": "modality-specific transformer blocks"})
    prenet_layerdrop: float = 0.05
    prenet_dropout: float = field(default=0.1, metadata={"help": "dropout after the context layer norm"})
    start_drop_path_rate: float = 0.0
    end_drop_path_rate: float = 0.0
    num_extra_tokens: int = field(default=0, metadata={"help": "learned tokens prepended to every sample (CLS)"})
    init_extra_token_zero: bool = True
    mask_noise_std: float = field(
        default=0.01, metadata={"help": "std of the Gaussian noise that fills masked positions for the decoder"})
    mask_prob: float = field(default=0.5, metadata={"help": "fraction of positions masked per student row"})
    mask_prob_adjust: float = field(
        default=0.05, metadata={"help": "extra block starts, compensating for overlapping blocks"})
    mask_length: int = field(default=5, metadata={"help": "block length (per side for 2D blocks)"})
    inverse_mask: bool = field(
        default=False, metadata={"help": "inverse block masking: choose blocks to keep, mask the rest"})
    encoder_zero_mask: bool = field(
        default=True, metadata={"help": "zero masked positions before the positional encoder (else Gaussian noise)"})
    mask_channel_prob: float = field(default=0.0, metadata={"help": "channel masking, used when fine-tuning"})
    mask_channel_length: int = 64
    ema_local_encoder: bool = field(
        default=False, metadata={"help": "the teacher keeps its own EMA copy of the local encoder"})
    local_grad_mult: float = field(default=1.0, metadata={"help": "gradient scale into the local encoder"})
    use_alibi_encoder: bool = field(default=True, metadata={"help": "ALiBi attention bias"})
    alibi_scale: float = field(default=1.0, metadata={"help": "initial ALiBi scale"})
    learned_alibi_scale: bool = True
    learned_alibi_scale_per_head: bool = True
    learned_alibi_scale_per_layer: bool = False
    num_alibi_heads: Optional[int] = field(default=None, metadata={"help": "None: model.num_heads"})
    model_depth: Optional[int] = field(default=None, metadata={"help": "None: model.depth"})
    decoder: DecoderConfig = field(default_factory=DecoderConfig)


@dataclass
class AudioModalityConfig(ModalityConfig):
    type: str = "AUDIO"
    feature_encoder_spec: str = field(
        default=BASE_AUDIO_CONV_SPEC,
        metadata={"help": "conv feature encoder as a list of (dim, kernel, stride); 320x at 16 kHz"})
    extractor_mode: ChoiceEnum(["layer_norm", "default"]) = field(
        default="layer_norm", metadata={"help": "normalisation inside the conv feature encoder"})
    conv_pos_width: int = field(default=95, metadata={"help": "total width of the conv positional encoder"})
    conv_pos_groups: int = field(default=16, metadata={"help": "groups of each positional conv"})
    conv_pos_depth: int = field(
        default=5, metadata={"help": "positional conv layers, each of kernel max(3, width // depth)"})
    conv_pos_pre_ln: bool = field(default=False, metadata={"help": "layer norm before the positional convs"})


def _image_decoder() -> DecoderConfig:
    return DecoderConfig(decoder_dim=768, decoder_groups=16, decoder_kernel=3, decoder_layers=6,
                         input_dropout=0.0)


@dataclass
class ImageModalityConfig(ModalityConfig):
    """Patches + fixed 2D sin-cos positions + CLS; paper base values (ImageNet, 224 px)."""

    type: str = "IMAGE"
    input_size: int = field(default=224, metadata={"help": "images are square crops of this size"})
    in_chans: int = 3
    patch_size: int = 16
    embed_dim: int = field(default=768, metadata={"help": "patch embedding width (= model.embed_dim)"})
    fixed_positions: bool = field(default=True, metadata={"help": "fixed 2D sin-cos positions"})
    prenet_depth: int = 2
    prenet_layerdrop: float = 0.0
    prenet_dropout: float = 0.0
    num_extra_tokens: int = 1
    init_extra_token_zero: bool = False
    mask_prob: float = 0.8
    mask_prob_adjust: float = 0.07
    mask_length: int = 3
    inverse_mask: bool = True
    ema_local_encoder: bool = True
    use_alibi_encoder: bool = False
    learned_alibi_scale: bool = False
    learned_alibi_scale_per_head: bool = False
    transformer_decoder: bool = field(
        default=False, metadata={"help": "the reference's optional transformer decoder (not supported; "
                                         "kept so a checkpoint asking for it is refused, not misread)"})
    decoder: DecoderConfig = field(default_factory=_image_decoder)


def _text_decoder() -> DecoderConfig:
    return DecoderConfig(decoder_dim=768, decoder_groups=1, decoder_kernel=9, decoder_layers=5,
                         decoder_residual=False, projection_layers=2, projection_ratio=2.0)


@dataclass
class TextModalityConfig(ModalityConfig):
    """Token embedding + learned positions; paper base values (BERT-style BPE text)."""

    type: str = "TEXT"
    max_source_positions: int = 512
    learned_pos: bool = True
    dropout: float = field(default=0.1, metadata={"help": "dropout on the token + position embedding"})
    no_scale_embedding: bool = True
    layernorm_embedding: bool = True
    no_token_positional_embeddings: bool = False
    prenet_layerdrop: float = 0.0
    prenet_dropout: float = 0.0
    mask_prob: float = 0.48
    mask_prob_adjust: float = 0.0
    mask_length: int = 1
    use_alibi_encoder: bool = False
    learned_alibi_scale: bool = False
    learned_alibi_scale_per_head: bool = False
    decoder: DecoderConfig = field(default_factory=_text_decoder)


@dataclass
class ModalitiesConfig(FairseqDataclass):
    audio: AudioModalityConfig = field(default_factory=AudioModalityConfig)
    image: ImageModalityConfig = field(default_factory=ImageModalityConfig)
    text: TextModalityConfig = field(default_factory=TextModalityConfig)


@dataclass
class Data2Vec2Config(FairseqDataclass):
    depth: int = field(default=12, metadata={"help": "transformer blocks shared by all modalities"})
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    norm_affine: bool = True
    layer_norm_first: bool = field(
        default=False, metadata={"help": "pre-LN blocks (the published models are post-LN)"})
    encoder_dropout: float = 0.1
    post_mlp_drop: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dropout_input: float = 0.0
    layerdrop: float = field(default=0.05, metadata={"help": "probability of skipping a block in training"})
    start_drop_path_rate: float = 0.0
    end_drop_path_rate: float = 0.0

    clone_batch: int = field(
        default=8, metadata={"help": "M: masked student views per sample, all served by one teacher pass"})
    average_top_k_layers: int = field(default=8, metadata={"help": "teacher blocks averaged into targets"})
    end_of_block_targets: bool = field(
        default=False, metadata={"help": "targets from block outputs instead of the FFN outputs"})
    instance_norm_target_layer: bool = True
    layer_norm_target_layer: bool = False
    layer_norm_targets: bool = False
    instance_norm_targets: bool = False

    loss_beta: float = field(default=0.0, metadata={"help": "0: L2 loss; > 0: smooth L1 with this beta"})
    loss_scale: Optional[float] = field(
        default=None, metadata={"help": "loss scale; None means 1 / sqrt(embed_dim)"})
    d2v_loss: float = 1.0
    cls_loss: float = 0.0

    encode_masked: bool = field(
        default=False,
        metadata={"help": "data2vec 1.0: masked frames are replaced by a learned embedding and encoded "
                          "(instead of dropped); use with decoder_layers=0"})

    ema_decay: float = field(default=0.999, metadata={"help": "initial teacher EMA decay"})
    ema_end_decay: float = field(default=0.99999, metadata={"help": "final teacher EMA decay"})
    ema_anneal_end_step: int = field(
        default=75000, metadata={"help": "updates over which the decay moves linearly to ema_end_decay"})
    ema_encoder_only: bool = False
    ema_same_dtype: bool = True

    min_target_var: float = field(default=0.1, metadata={"help": "stop if target_var falls below (collapse)"})
    min_pred_var: float = field(default=0.01, metadata={"help": "stop if pred_var falls below (collapse)"})
    collapse_check_after: int = field(
        default=5000, metadata={"help": "updates before the collapse guard is armed"})

    supported_modality: str = "AUDIO"
    modalities: ModalitiesConfig = field(default_factory=ModalitiesConfig)
