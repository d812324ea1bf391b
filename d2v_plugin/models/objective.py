"""The data2vec 2.0 objective, as plain functions of tensors: the regression of the teacher's
targets at the masked positions, the CLS loss, the variance monitors (``batch_std``) and the
collapse guard.

The model (``data2vec2.py``) calls :func:`pretraining_objective` with what its forward made
and returns the typed :class:`ObjectiveResult`; only the criterion turns that into fairseq's
string-keyed logging dict. Loss terms are per element (not reduced), named as in the reference
implementation (``<MODALITY>_regression``, ``cls``) so its recorded outputs compare one to one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data.expander import expand_rows
from ..masking import MaskInfo


class RepresentationCollapse(RuntimeError):
    """Raised when the teacher targets or the predictions lose their variance."""


@dataclass
class ObjectiveResult:
    """One forward's loss terms and monitors.

    losses:      per-element loss terms by name (summed by the criterion); the regression
                 term is (N, D) for the N masked positions of all student rows.
    sample_size: N, the number of masked positions (the criterion divides the loss by it).
    masked_pct:  fraction of positions masked in each student row.
    pred_var:    ``batch_std`` of the predictions at the masked positions.
    target_var:  ``batch_std`` of their targets.
    ema_decay:   the teacher's current EMA decay (0 without a teacher).
    target_slowness: ``target_slowness`` of the teacher's targets (audio), or None.
    """

    losses: Dict[str, torch.Tensor]
    sample_size: torch.Tensor
    masked_pct: float
    pred_var: torch.Tensor
    target_var: torch.Tensor
    ema_decay: float
    target_slowness: Optional[torch.Tensor] = None


class Regression(NamedTuple):
    """The regression term and the predictions/targets it compared, both (N, D)."""

    loss: torch.Tensor
    prediction: torch.Tensor
    target: torch.Tensor


def batch_std(y: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the std across all positions, all-reduced over workers.

    One all-reduce of (count, sum, sum of squares) on the tensor's own device, so it works
    with gloo on CPU as well as NCCL on GPU.
    """
    y = y.reshape(-1, y.size(-1)).float()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        stats = torch.cat([y.new_full((1,), y.size(0)), y.sum(0), (y * y).sum(0)])
        dist.all_reduce(stats)
        n, total, total_sq = stats[0], stats[1:1 + y.size(1)], stats[1 + y.size(1):]
        var = total_sq / (n - 1) - total * total / (n * (n - 1))
    else:
        var = y.var(dim=0)
    return torch.sqrt(var + 1e-6).mean()


def target_slowness(targets: torch.Tensor, lag: int,
                    padding_mask: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Mean cosine between each target and the one ``lag`` positions later, over pairs of real
    (unpadded) frames; None when no pair exists or ``lag`` is 0.

    Why: at small scale a speech run can settle on targets that change slowly in time; the
    decoder then fills masked spans in from their neighbours, the loss is low and the encoder
    learns little speech. With 20 ms frames, ``lag`` 10: about 0.5 for such runs against about
    0.2 for runs that learned (docs/efficiency.md). targets: (B, T, D); padding_mask: (B, T).
    """
    if lag <= 0 or targets.size(1) <= lag:
        return None
    t = targets.float()
    cos = F.cosine_similarity(t[:, :-lag], t[:, lag:], dim=-1)         # (B, T - lag)
    if padding_mask is not None:
        real = ~(padding_mask[:, :-lag] | padding_mask[:, lag:])
        if not real.any():
            return None
        return cos[real].mean()
    return cos.mean()


def loss_scale_for(dim: int, loss_scale: Optional[float]) -> float:
    """``loss_scale``, or 1 / sqrt(D) when it is None (the paper's default)."""
    return loss_scale if loss_scale is not None else 1 / math.sqrt(dim)


def regression_loss(prediction: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, clone_batch: int,
                    loss_beta: float = 0.0, loss_scale: Optional[float] = None,
                    weight: float = 1.0) -> Regression:
    """Per-element loss of the student's predictions against the teacher's targets at the
    masked positions.

    prediction: (B*M, T, D) decoder output; targets: (B, T, D), one per sample (student row r
    belongs to sample r // M, the expander's layout); mask: (B*M, T) bool. L2 when
    ``loss_beta`` is 0, else smooth L1 with that beta; times ``loss_scale_for(D, loss_scale)``
    and ``weight`` (``d2v_loss``).
    """
    rows, frames = mask.nonzero(as_tuple=True)                      # masked positions, row-major
    x = prediction[rows, frames].float()                             # (N, D)
    y = targets[torch.div(rows, clone_batch, rounding_mode="floor"), frames]  # (N, D)
    if loss_beta == 0:
        loss = F.mse_loss(x, y, reduction="none")
    else:
        loss = F.smooth_l1_loss(x, y, reduction="none", beta=loss_beta)
    return Regression(loss * loss_scale_for(x.size(-1), loss_scale) * weight, x, y)


def cls_loss(cls_prediction: torch.Tensor, targets: torch.Tensor, clone_batch: int, weight: float,
             sample_size: torch.Tensor, loss_scale: Optional[float] = None) -> torch.Tensor:
    """The CLS token of each student row (B*M, D) regresses the mean of its sample's targets
    (B, T, D) over positions; weighted by ``weight`` x the number of masked positions (the
    reference's scaling), per element."""
    cls_target = expand_rows(targets.mean(dim=1), clone_batch)
    loss = F.mse_loss(cls_prediction.float(), cls_target, reduction="none")
    return loss * loss_scale_for(cls_prediction.size(-1), loss_scale) * (weight * sample_size)


def check_collapse(num_updates: int, target_var: torch.Tensor, pred_var: torch.Tensor, check_after: int,
                   min_target_var: float, min_pred_var: float) -> None:
    """Raise RepresentationCollapse once past ``check_after`` updates if a monitor is too low."""
    if num_updates <= check_after:
        return
    t, p = float(target_var), float(pred_var)
    if t < min_target_var or p < min_pred_var:
        raise RepresentationCollapse(
            f"representation collapse at update {num_updates}: target_var={t:.4f} "
            f"(min {min_target_var}), pred_var={p:.4f} (min {min_pred_var}). "
            f"Try a lower learning rate, a higher model.ema_decay, or check the data for silence.")


def pretraining_objective(cfg, modality: str, x: torch.Tensor, prediction: torch.Tensor,
                          targets: torch.Tensor, mask_info: MaskInfo, num_extra_tokens: int,
                          num_updates: int, ema_decay: float,
                          padding_mask: Optional[torch.Tensor] = None) -> ObjectiveResult:
    """The full objective of one forward, with ``cfg`` a ``Data2Vec2Config``.

    x: (B*M, E+K, D) student encoder output (its extra tokens lead; the last one is the CLS
    token ``cls_loss`` trains); prediction: (B*M, T, D) decoder output; targets (B, T, D);
    padding_mask: (B, T) frames that are padding, or None.
    """
    regression = regression_loss(prediction, targets, mask_info.mask, cfg.clone_batch, cfg.loss_beta,
                                 cfg.loss_scale, cfg.d2v_loss)
    sample_size = torch.tensor(float(regression.prediction.size(0)), device=regression.prediction.device)
    with torch.no_grad():
        masked_pct = 1 - mask_info.ids_keep.size(1) / mask_info.mask.size(1)
        pred_var = batch_std(regression.prediction)
        target_var = batch_std(regression.target)
        check_collapse(num_updates, target_var, pred_var, cfg.collapse_check_after, cfg.min_target_var,
                       cfg.min_pred_var)
        slowness = (target_slowness(targets, cfg.slowness_lag, padding_mask)
                    if modality.upper() == "AUDIO" else None)
    losses = {f"{modality}_regression": regression.loss}
    if cfg.cls_loss > 0:
        if num_extra_tokens == 0:
            raise ValueError("cls_loss > 0 needs an extra (CLS) token: set num_extra_tokens >= 1")
        losses["cls"] = cls_loss(x[:, num_extra_tokens - 1], targets, cfg.clone_batch, cfg.cls_loss,
                                 sample_size, cfg.loss_scale)
    return ObjectiveResult(losses, sample_size, masked_pct, pred_var, target_var, ema_decay, slowness)
