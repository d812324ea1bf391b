"""Sequence classification on a pretrained data2vec 2.0 encoder (GLUE-style fine-tuning).

Registered as ``data2vec_classification`` for fairseq's own ``sentence_prediction`` task and
criterion, the way RoBERTa and the reference data2vec text models are fine-tuned: the task
(with ``d2v2_multi: true``) feeds ``source`` + ``padding_mask`` and registers a head per
``classification_head_name``; the criterion calls ``model(..., features_only=True,
classification_head_name=...)`` and reports accuracy.

Like fairseq's ``wav2vec_ctc``, the first build reads the pretraining config from
``model_path`` and stores it in ``pretrained_args``; later builds (resuming, or
``load_model_ensemble_and_task`` on the fine-tuned checkpoint) use the stored config and
never open ``model_path``, so a fine-tuned checkpoint loads after the pretrained one is gone.
``no_pretrained_weights: true`` builds the same architecture with fresh weights: the
random-init baseline of a "does pretraining help?" comparison.
"""
import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.models import BaseFairseqModel, register_model
from omegaconf import DictConfig, OmegaConf, open_dict

logger = logging.getLogger(__name__)

POOLING = ["mean", "first"]
# Pretraining-config fields a fine-tuning run may override (None: keep the pretraining value).
ENCODER_OVERRIDES = ("encoder_dropout", "attention_dropout", "activation_dropout", "post_mlp_drop",
                     "layerdrop")


@dataclass
class Data2VecClassificationConfig(FairseqDataclass):
    model_path: Optional[str] = field(
        default=None, metadata={"help": "pretrained data2vec_multi checkpoint (read at the first build only)"})
    no_pretrained_weights: bool = field(
        default=False, metadata={"help": "same architecture, fresh weights: the random-init baseline"})
    pooling: ChoiceEnum(POOLING) = field(
        default="mean", metadata={"help": "mean: average of the non-pad outputs (extra tokens left out); "
                                          "first: the first output (<s>, or the CLS token), as RoBERTa"})
    pooler_dropout: float = field(default=0.1, metadata={"help": "dropout before each head layer"})
    pooler_activation_fn: ChoiceEnum(utils.get_available_activation_fns()) = field(
        default="tanh", metadata={"help": "activation between the head's two linear layers"})
    encoder_dropout: Optional[float] = field(default=None, metadata={"help": "None: the pretraining value"})
    attention_dropout: Optional[float] = field(default=None, metadata={"help": "None: the pretraining value"})
    activation_dropout: Optional[float] = field(default=None, metadata={"help": "None: the pretraining value"})
    post_mlp_drop: Optional[float] = field(default=None, metadata={"help": "None: the pretraining value"})
    layerdrop: Optional[float] = field(default=None, metadata={"help": "None: the pretraining value"})
    max_positions: int = field(default=512, metadata={"help": "set by sentence_prediction (task.max_positions)"})
    pretrained_args: Optional[Any] = field(
        default=None, metadata={"help": "filled in from model_path at the first build; do not set"})


class ClassificationHead(nn.Module):
    """Pooled features (B, D) -> logits (B, C): dropout, dense, activation, dropout, projection
    (RoBERTa's sentence head, applied to an already pooled vector)."""

    def __init__(self, dim: int, num_classes: int, activation: str, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(dim, dim)
        self.activation_fn = utils.get_activation_fn(activation)
        self.out_proj = nn.Linear(dim, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.activation_fn(self.dense(self.dropout(pooled)))
        return self.out_proj(self.dropout(x))


@register_model("data2vec_classification", dataclass=Data2VecClassificationConfig)
class Data2VecClassificationModel(BaseFairseqModel):
    def __init__(self, cfg: Data2VecClassificationConfig, encoder: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.classification_heads = nn.ModuleDict()

    @classmethod
    def build_model(cls, cfg: Data2VecClassificationConfig, task):
        from fairseq import models

        state = None
        if cfg.pretrained_args is None:
            state = _read_pretrained(cfg.model_path)
            with open_dict(cfg):
                cfg.pretrained_args = state["cfg"]
            _remember_in_run_config(cfg)
        pretrained = cfg.pretrained_args
        if not isinstance(pretrained, DictConfig):
            pretrained = OmegaConf.create(pretrained)
        model_cfg = copy.deepcopy(pretrained.model)
        with open_dict(model_cfg):
            for name in ENCODER_OVERRIDES:
                if getattr(cfg, name) is not None:
                    model_cfg[name] = getattr(cfg, name)
        encoder = models.build_model(model_cfg, task, from_checkpoint=True)
        if type(encoder).__name__ != "Data2Vec2Model":
            raise ValueError(f"model.model_path: the pretrained model is {model_cfg.get('_name')!r}, "
                             f"not data2vec_multi")
        encoder.remove_pretraining_modules()
        if state is not None:
            _check_dictionary(state, task, cfg.model_path)
            if cfg.no_pretrained_weights:
                logger.info("no_pretrained_weights: fresh weights in the architecture of %s", cfg.model_path)
            else:
                _load_encoder_weights(encoder, state["model"], cfg.model_path)
        return cls(cfg, encoder)

    def register_classification_head(self, name: str, num_classes: int, **unused) -> None:
        if name in self.classification_heads:
            old = self.classification_heads[name].out_proj.out_features
            if old != num_classes:
                logger.warning("re-registering head %r with %d classes (was %d)", name, num_classes, old)
        self.classification_heads[name] = ClassificationHead(
            self.encoder.cfg.embed_dim, num_classes, self.cfg.pooler_activation_fn, self.cfg.pooler_dropout)

    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                features_only: bool = True, classification_head_name: Optional[str] = None,
                **unused):
        """(logits (B, C), {"pooled": (B, D)}) with a head name, else (pooled, {})."""
        pooled = self.pool(source, padding_mask)
        if classification_head_name is None:
            return pooled, {}
        if classification_head_name not in self.classification_heads:
            raise KeyError(f"no classification head {classification_head_name!r}; registered: "
                           f"{sorted(self.classification_heads)}")
        return self.classification_heads[classification_head_name](pooled), {"pooled": pooled}

    def pool(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One vector (B, D) per sample from the encoder's unmasked final output."""
        if self.cfg.pooling == "first":
            out = self.encoder.extract_features(source, padding_mask, mask=False, remove_extra_tokens=False)
            return out["x"][:, 0]
        out = self.encoder.extract_features(source, padding_mask, mask=False, remove_extra_tokens=True)
        x, pad = out["x"], out["padding_mask"]                                # (B, T, D), (B, T)
        if pad is None:
            return x.mean(dim=1)
        keep = (~pad.bool()).unsqueeze(-1).to(x.dtype)                        # (B, T, 1)
        return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)

    def max_positions(self):
        return self.cfg.max_positions


def _read_pretrained(path: Optional[str]) -> Dict[str, Any]:
    from fairseq import checkpoint_utils

    if not path:
        raise ValueError("model.model_path is not set: data2vec_classification starts from a pretrained "
                         "data2vec_multi checkpoint (its architecture, and its weights unless "
                         "model.no_pretrained_weights=true)")
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    if state.get("cfg") is None or "model" not in state["cfg"]:
        raise ValueError(f"{path}: no hydra config in the checkpoint (an old argparse checkpoint?)")
    return state


def _remember_in_run_config(cfg) -> None:
    """Store ``pretrained_args`` in the run's own ``cfg.model`` too, the one fairseq saves.

    fairseq's ``models.build_model`` hands the model a merged *copy* of ``cfg.model`` (whose
    parent is the run's config). ``audio_finetuning`` copies ``w2v_args`` back for
    ``wav2vec_ctc``; ``sentence_prediction`` has no such step, so the model does it.
    """
    root = cfg._get_parent() if OmegaConf.is_config(cfg) else None
    run_model_cfg = root.get("model") if root is not None else None
    if run_model_cfg is None or run_model_cfg is cfg:
        return
    with open_dict(run_model_cfg):
        run_model_cfg.pretrained_args = cfg.pretrained_args


def _check_dictionary(state: Dict[str, Any], task, path: str) -> None:
    """Token ids must mean what they meant in pretraining: compare with the dictionary our text
    task saved in the checkpoint (reference checkpoints only get the embedding-size check)."""
    symbols = (state.get("task_state") or {}).get("dictionary_symbols")
    dictionary = getattr(task, "source_dictionary", None)
    if symbols is None or dictionary is None:
        return
    if list(dictionary.symbols) != list(symbols):
        raise ValueError(f"the fine-tuning data's dictionary ({len(dictionary)} symbols, "
                         f"{getattr(task.cfg, 'data', '?')}/input0/dict.txt) is not the one {path} was "
                         f"pretrained with ({len(symbols)} symbols): binarize with the pretraining "
                         f"data-bin's dict.txt (d2v-text-classification-prep does)")


def _load_encoder_weights(encoder: nn.Module, weights: Dict[str, torch.Tensor], path: str) -> None:
    try:
        encoder.load_state_dict(dict(weights), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: its weights do not fit the architecture built from its own config: "
                         f"{e}") from None
    logger.info("loaded the pretrained encoder from %s", path)
