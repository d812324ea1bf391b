"""Configuration of the data2vec 2.0 model.

Field names mirror the reference implementation's ``data2vec_multi`` config so that its
checkpoints, configs and fairseq's ``wav2vec_ctc`` overrides (which set ``mask_prob``,
``encoder_dropout``... by name) apply unchanged. Defaults are the paper's base audio values
(the image and text modality sections: the paper's base image and text values); these
dataclasses are the single source of defaults: the yamls under ``config/`` only set what
differs. Reference fields this implementation does not use are not declared: fairseq drops
them when it loads a reference checkpoint (``merge_with_parent(remove_missing=True)``).
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

    prenet_depth: int = field(default=0, metadata={"help": "modality-specific transformer blocks"})
    prenet_layerdrop: float = field(
        default=0.05, metadata={"help": "probability of skipping a prenet block in training"})
    prenet_dropout: float = field(default=0.1, metadata={"help": "dropout after the context layer norm"})
    start_drop_path_rate: float = field(default=0.0, metadata={"help": "stochastic depth of the first prenet block"})
    end_drop_path_rate: float = field(
        default=0.0, metadata={"help": "stochastic depth of the last prenet block (linear in between)"})
    num_extra_tokens: int = field(default=0, metadata={"help": "learned tokens prepended to every sample (CLS)"})
    init_extra_token_zero: bool = field(
        default=True, metadata={"help": "extra tokens start at zero (else standard normal)"})
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
    mask_channel_length: int = field(default=64, metadata={"help": "length of each masked channel span"})
    ema_local_encoder: bool = field(
        default=False, metadata={"help": "the teacher keeps its own EMA copy of the local encoder"})
    local_grad_mult: float = field(default=1.0, metadata={"help": "gradient scale into the local encoder"})
    use_alibi_encoder: bool = field(default=True, metadata={"help": "ALiBi attention bias"})
    alibi_scale: float = field(default=1.0, metadata={"help": "initial ALiBi scale"})
    learned_alibi_scale: bool = field(default=True, metadata={"help": "train the ALiBi scale"})
    learned_alibi_scale_per_head: bool = field(default=True, metadata={"help": "one ALiBi scale per head"})
    learned_alibi_scale_per_layer: bool = field(
        default=False, metadata={"help": "one ALiBi scale per layer (else shared by all layers)"})
    num_alibi_heads: Optional[int] = field(default=None, metadata={"help": "None: model.num_heads"})
    model_depth: Optional[int] = field(default=None, metadata={"help": "None: model.depth"})
    decoder: DecoderConfig = field(
        default_factory=DecoderConfig, metadata={"help": "the student's decoder (predicts the targets)"})


@dataclass
class AudioModalityConfig(ModalityConfig):
    """Waveform -> conv feature encoder frames (50 Hz at 16 kHz); paper base values."""

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
    conv_pos_zero_padding: bool = field(
        default=False, metadata={"help": "zero padded frames before each positional conv, so that an "
                                 "utterance's features do not depend on the batch it is padded in "
                                 "(false: the reference, whose padding leaks into the last ~90 frames)"})


def restated(base, name: str, default):
    """A subclass's own default for a field of ``base``, with the base field's help text."""
    return field(default=default, metadata=base.__dataclass_fields__[name].metadata)


def _image_decoder() -> DecoderConfig:
    return DecoderConfig(decoder_dim=768, decoder_groups=16, decoder_kernel=3, decoder_layers=6,
                         input_dropout=0.0)


@dataclass
class ImageModalityConfig(ModalityConfig):
    """Patches + fixed 2D sin-cos positions + CLS; paper base values (ImageNet, 224 px)."""

    input_size: int = field(default=224, metadata={"help": "images are square crops of this size"})
    in_chans: int = field(default=3, metadata={"help": "input channels (RGB)"})
    patch_size: int = field(default=16, metadata={"help": "side of the square patches, in pixels"})
    embed_dim: int = field(default=768, metadata={"help": "patch embedding width (= model.embed_dim)"})
    fixed_positions: bool = field(default=True, metadata={"help": "fixed 2D sin-cos positions"})
    prenet_depth: int = restated(ModalityConfig, "prenet_depth", 2)
    prenet_layerdrop: float = restated(ModalityConfig, "prenet_layerdrop", 0.0)
    prenet_dropout: float = restated(ModalityConfig, "prenet_dropout", 0.0)
    num_extra_tokens: int = restated(ModalityConfig, "num_extra_tokens", 1)
    init_extra_token_zero: bool = restated(ModalityConfig, "init_extra_token_zero", False)
    mask_prob: float = restated(ModalityConfig, "mask_prob", 0.8)
    mask_prob_adjust: float = restated(ModalityConfig, "mask_prob_adjust", 0.07)
    mask_length: int = restated(ModalityConfig, "mask_length", 3)
    inverse_mask: bool = restated(ModalityConfig, "inverse_mask", True)
    ema_local_encoder: bool = restated(ModalityConfig, "ema_local_encoder", True)
    use_alibi_encoder: bool = restated(ModalityConfig, "use_alibi_encoder", False)
    learned_alibi_scale: bool = restated(ModalityConfig, "learned_alibi_scale", False)
    learned_alibi_scale_per_head: bool = restated(ModalityConfig, "learned_alibi_scale_per_head", False)
    transformer_decoder: bool = field(
        default=False, metadata={"help": "the reference's optional transformer decoder (not supported; "
                                         "kept so a checkpoint asking for it is refused, not misread)"})
    decoder: DecoderConfig = field(
        default_factory=_image_decoder, metadata={"help": "the student's decoder (2D convs for images)"})


def _text_decoder() -> DecoderConfig:
    return DecoderConfig(decoder_dim=768, decoder_groups=1, decoder_kernel=9, decoder_layers=5,
                         decoder_residual=False, projection_layers=2, projection_ratio=2.0)


@dataclass
class TextModalityConfig(ModalityConfig):
    """Token embedding + learned positions; paper base values (BERT-style BPE text)."""

    max_source_positions: int = field(default=512, metadata={"help": "longest token sequence (positions table size)"})
    learned_pos: bool = field(default=True, metadata={"help": "learned (else sinusoidal) position embeddings"})
    dropout: float = field(default=0.1, metadata={"help": "dropout on the token + position embedding"})
    no_scale_embedding: bool = field(
        default=True, metadata={"help": "do not scale token embeddings by sqrt(embed_dim)"})
    layernorm_embedding: bool = field(default=True, metadata={"help": "layer norm on the embedding sum"})
    no_token_positional_embeddings: bool = field(default=False, metadata={"help": "no position embeddings"})
    prenet_layerdrop: float = restated(ModalityConfig, "prenet_layerdrop", 0.0)
    prenet_dropout: float = restated(ModalityConfig, "prenet_dropout", 0.0)
    mask_prob: float = restated(ModalityConfig, "mask_prob", 0.48)
    mask_prob_adjust: float = restated(ModalityConfig, "mask_prob_adjust", 0.0)
    mask_length: int = restated(ModalityConfig, "mask_length", 1)
    use_alibi_encoder: bool = restated(ModalityConfig, "use_alibi_encoder", False)
    learned_alibi_scale: bool = restated(ModalityConfig, "learned_alibi_scale", False)
    learned_alibi_scale_per_head: bool = restated(ModalityConfig, "learned_alibi_scale_per_head", False)
    decoder: DecoderConfig = field(
        default_factory=_text_decoder, metadata={"help": "the student's decoder (1D convs + projection)"})


@dataclass
class ModalitiesConfig(FairseqDataclass):
    """One section per modality; the model uses the one named by ``supported_modality``."""

    audio: AudioModalityConfig = field(default_factory=AudioModalityConfig, metadata={"help": "speech"})
    image: ImageModalityConfig = field(default_factory=ImageModalityConfig, metadata={"help": "images"})
    text: TextModalityConfig = field(default_factory=TextModalityConfig, metadata={"help": "text"})


@dataclass
class Data2Vec2Config(FairseqDataclass):
    depth: int = field(default=12, metadata={"help": "transformer blocks shared by all modalities"})
    embed_dim: int = field(default=768, metadata={"help": "width of the transformer"})
    num_heads: int = field(default=12, metadata={"help": "attention heads per block"})
    mlp_ratio: float = field(default=4.0, metadata={"help": "FFN width / embed_dim"})
    norm_eps: float = field(default=1e-5, metadata={"help": "layer norm epsilon"})
    norm_affine: bool = field(default=True, metadata={"help": "layer norms have a learned scale and bias"})
    layer_norm_first: bool = field(
        default=False, metadata={"help": "pre-LN blocks (the published models are post-LN)"})
    encoder_dropout: float = field(default=0.1, metadata={"help": "dropout on the attention output"})
    post_mlp_drop: float = field(default=0.1, metadata={"help": "dropout on the FFN output"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on the attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout inside the FFN, after the GELU"})
    dropout_input: float = field(default=0.0, metadata={"help": "dropout on the input of the shared blocks"})
    layerdrop: float = field(default=0.05, metadata={"help": "probability of skipping a block in training"})
    start_drop_path_rate: float = field(default=0.0, metadata={"help": "stochastic depth of the first block"})
    end_drop_path_rate: float = field(
        default=0.0, metadata={"help": "stochastic depth of the last block (linear in between)"})

    clone_batch: int = field(
        default=8, metadata={"help": "M: masked student views per sample, all served by one teacher pass"})
    average_top_k_layers: int = field(default=8, metadata={"help": "teacher blocks averaged into targets"})
    end_of_block_targets: bool = field(
        default=False, metadata={"help": "targets from block outputs instead of the FFN outputs"})
    instance_norm_target_layer: bool = field(
        default=True, metadata={"help": "instance-normalise each teacher block's output over time before averaging"})
    layer_norm_target_layer: bool = field(
        default=False, metadata={"help": "layer-normalise each teacher block's output before averaging"})
    layer_norm_targets: bool = field(default=False, metadata={"help": "layer-normalise the averaged target"})
    instance_norm_targets: bool = field(
        default=False, metadata={"help": "instance-normalise the averaged target over time"})

    loss_beta: float = field(default=0.0, metadata={"help": "0: L2 loss; > 0: smooth L1 with this beta"})
    loss_scale: Optional[float] = field(
        default=None, metadata={"help": "loss scale; None means 1 / sqrt(embed_dim)"})
    d2v_loss: float = field(default=1.0, metadata={"help": "weight of the regression loss (the reference's name)"})
    cls_loss: float = field(
        default=0.0, metadata={"help": "weight of the CLS loss (the reference's name); > 0 needs num_extra_tokens"})

    encode_masked: bool = field(
        default=False,
        metadata={"help": "data2vec 1.0: masked frames are replaced by a learned embedding and encoded "
                          "(instead of dropped); use with decoder_layers=0"})

    ema_decay: float = field(default=0.999, metadata={"help": "initial teacher EMA decay"})
    ema_end_decay: float = field(default=0.99999, metadata={"help": "final teacher EMA decay"})
    ema_anneal_end_step: int = field(
        default=75000, metadata={"help": "updates over which the decay moves linearly to ema_end_decay"})
    ema_encoder_only: bool = field(
        default=False, metadata={"help": "the teacher is an EMA of the shared blocks only, fed by the "
                                         "student's modality encoder (text)"})

    min_target_var: float = field(default=0.1, metadata={"help": "stop if target_var falls below (collapse)"})
    min_pred_var: float = field(default=0.01, metadata={"help": "stop if pred_var falls below (collapse)"})
    collapse_check_after: int = field(
        default=5000, metadata={"help": "updates before the collapse guard is armed"})
    slowness_lag: int = field(
        default=10, metadata={"help": "audio: log target_slowness, the cosine between teacher targets "
                                      "this many frames apart (0: off)"})

    supported_modality: str = field(
        default="AUDIO", metadata={"help": "AUDIO, IMAGE or TEXT: the modality this model trains on"})
    modalities: ModalitiesConfig = field(
        default_factory=ModalitiesConfig, metadata={"help": "settings per modality (only the supported one is used)"})
