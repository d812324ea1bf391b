"""Criterion: sums the model's per-element losses and logs the collapse monitors.

The model returns a typed ``ObjectiveResult`` (``models/objective.py``); this is the one place
it becomes fairseq's string-keyed logging dict."""
from typing import Dict, List

import torch
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

# Statistics the model computes once per forward; logged as their mean over forwards/workers.
MEAN_STATS = ("target_var", "pred_var", "ema_decay", "masked_pct")
# Statistics only some forwards have (audio; None otherwise): averaged over the forwards that
# logged them, counted in ``n<key>``.
OPTIONAL_MEAN_STATS = ("target_slowness",)


def _half_precision(model) -> bool:
    """fairseq's fp16 (model cast to half) or fp16 autocast (``common.amp``)."""
    param = next(model.parameters(), None)
    if param is not None and param.dtype == torch.float16:
        return True
    device = param.device.type if param is not None else "cpu"
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16


@register_criterion("data2vec", dataclass=FairseqDataclass)
class Data2VecCriterion(FairseqCriterion):
    def forward(self, model, sample, reduce: bool = True):
        result = model(**sample["net_input"])
        sample_size = result.sample_size
        loss = sum(term.float().sum() for term in result.losses.values())
        if not torch.isfinite(loss) and not _half_precision(model):
            # A clear stop, never averaged in. The dataset rejects non-finite audio, so a
            # finite batch here means the model itself produced it: training diverged. Under
            # fp16 an overflow is routine: the loss goes on to backward, fairseq's loss scaler
            # sees the non-finite gradients, skips the update (its logs are dropped) and lowers
            # the scale.
            ids = sample.get("id")
            cause = ("the input batch is finite, so training diverged: lower optimization.lr, "
                     "raise warmup, or clip gradients (optimization.clip_norm)"
                     if torch.isfinite(sample["net_input"]["source"]).all()
                     else "the input audio is non-finite: check those utterances")
            raise FloatingPointError(
                f"non-finite data2vec loss ({float(loss.detach())}) for sample ids "
                f"{ids.tolist() if ids is not None else '?'}: {cause}")
        logging_output = {
            "loss": loss.detach(),
            "sample_size": sample_size.detach() if torch.is_tensor(sample_size) else sample_size,
            "nsentences": sample["net_input"]["source"].size(0),
            "ntokens": sample_size.detach() if torch.is_tensor(sample_size) else sample_size,
            "nforwards": 1,
        }
        for key in MEAN_STATS + OPTIONAL_MEAN_STATS:
            value = getattr(result, key)
            if value is None:        # an optional statistic this forward did not compute
                continue
            logging_output[key] = value.detach().float() if torch.is_tensor(value) else float(value)
            if key in OPTIONAL_MEAN_STATS:
                logging_output[f"n{key}"] = 1
        return loss, sample_size, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs: List[Dict]) -> None:
        def total(key):
            return sum(float(log.get(key, 0)) for log in logging_outputs)

        sample_size = total("sample_size")
        forwards = max(total("nforwards"), 1.0)
        metrics.log_scalar("loss", total("loss") / max(sample_size, 1.0), sample_size, round=4)
        metrics.log_scalar("sample_size", sample_size, round=0)
        for key in MEAN_STATS:
            if any(key in log for log in logging_outputs):
                metrics.log_scalar(key, total(key) / forwards, round=6 if key == "ema_decay" else 4)
        for key in OPTIONAL_MEAN_STATS:
            count = total(f"n{key}")
            if count > 0:
                metrics.log_scalar(key, total(key) / count, round=4)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        # Every logged value is a sum (or divided by the summed forward count), which lets
        # fairseq all-reduce them on CPU/gloo; the gather path needs CUDA.
        return True
