"""Load fine-tuned (``wav2vec_ctc``) and pretrained (``data2vec_multi``) checkpoints for the
ASR tools.

Two things make fairseq's ``load_model_ensemble_and_task`` need help here:

* **The pretrained checkpoint is not needed.** A ``wav2vec_ctc`` checkpoint stores the
  pretraining config under ``cfg.model.w2v_args`` (fairseq's ``Wav2VecEncoder`` fills it in
  when fine-tuning starts), and with ``w2v_args`` set the encoder is *built* from that
  config and never opens ``cfg.model.w2v_path``; the fine-tuned weights then come from the
  fine-tuned state dict. So a checkpoint whose pretrained file was deleted or moved loads.
* **The target dictionary is pickled.** ``audio_finetuning`` saves its task state, i.e. a
  ``fairseq.data.dictionary.Dictionary`` *object*, under ``task_state``; importing
  ``d2v_plugin`` allow-lists that class (``d2v_plugin/checkpoint_safety.py``), so plain
  ``load_model_ensemble_and_task`` works too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

logger = logging.getLogger(__name__)


def read_state(path: str, arg_overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """fairseq's ``load_checkpoint_to_cpu`` once d2v_plugin's registrations and allow-list exist."""
    import d2v_plugin  # noqa: F401  (registers data2vec_multi; allow-lists checkpoint types)
    from fairseq import checkpoint_utils

    return checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides)


def model_name(state: Dict[str, Any]) -> str:
    """The registered model name recorded in a loaded checkpoint state."""
    cfg = state.get("cfg")
    if cfg is None:
        return getattr(state.get("args"), "arch", "")
    return str(cfg["model"]["_name"])


def load_model_and_task(path: str, data_dir: Optional[str] = None):
    """(model in eval mode, cfg, task) for any checkpoint; ``data_dir`` replaces every ``data``
    setting recorded in it (including the pretraining task's inside ``w2v_args``)."""
    from fairseq import checkpoint_utils

    overrides = {"data": data_dir} if data_dir else None
    state = read_state(path, overrides)
    name = model_name(state)
    if name == "wav2vec_ctc":
        w2v_args = state["cfg"]["model"].get("w2v_args")
        if w2v_args is None:
            # Only then would fairseq open model.w2v_path (a checkpoint saved before training
            # started); say so rather than fail on a path the user may not have.
            logger.warning("%s has no embedded w2v_args: fairseq will read the pretrained "
                           "checkpoint %s", path, state["cfg"]["model"].get("w2v_path"))
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], state=state)
    model = models[0]
    model.eval()
    return model, cfg, task


@dataclass
class Encoder:
    """A data2vec_multi encoder and how its input audio must be prepared."""

    model: torch.nn.Module      # Data2Vec2Model (the student; teacher and decoder unused)
    normalize: bool             # zero mean / unit variance per utterance, as in training
    sample_rate: int
    source: str                 # "data2vec_multi" or "wav2vec_ctc"


def load_encoder(path: str, data_dir: Optional[str] = None) -> Encoder:
    """The data2vec_multi encoder of a pretrained checkpoint or of a fine-tuned wav2vec_ctc one."""
    model, cfg, _ = load_model_and_task(path, data_dir)
    name = cfg.model._name
    if name == "wav2vec_ctc":
        encoder = model.w2v_encoder.w2v_model
    elif name == "data2vec_multi":
        encoder = model
    else:
        raise ValueError(f"{path}: model {name!r} is neither data2vec_multi (pretrained) nor "
                         f"wav2vec_ctc (fine-tuned)")
    if type(encoder).__name__ != "Data2Vec2Model":
        raise ValueError(f"{path}: the encoder is {type(encoder).__name__}, not data2vec_multi")
    normalize = bool(cfg.task.get("normalize", True))
    sample_rate = int(cfg.task.get("sample_rate", 16000))
    return Encoder(encoder.eval(), normalize, sample_rate, name)
