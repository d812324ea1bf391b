"""Which parameters get no weight decay, as a named fairseq parameter group.

The reference marks every 1-D parameter (layer-norm gains and biases), every ``.bias`` and the
ALiBi scales with ``optim_overrides = {"optimizer": {"weight_decay_scale": 0}}``, but fairseq's
``composite`` optimizer never applies ``weight_decay_scale`` (it tests for a key the optimizer
config does not have), so in the reference those parameters are decayed after all. A named group
does work: fairseq's composite optimizer builds one optimizer per ``param_group`` from its own
entry under ``optimizer.groups``, the fp16 optimizer copies ``param_group`` to its fp32 copies,
and the optimizer state is saved and restored per group name. A recipe opts in by listing a
``no_decay`` group with ``weight_decay: 0`` (config/pretraining/base_image.yaml); optimizers
other than ``composite`` ignore the attribute, so recipes with plain Adam are unchanged.
"""
import torch.nn as nn

NO_DECAY = "no_decay"


def exempt_from_weight_decay(name: str, param: nn.Parameter) -> bool:
    """The reference's rule: 1-D tensors, biases and the (5-D) ALiBi scales."""
    return param.dim() == 1 or name.endswith(".bias") or "alibi_scale" in name


def mark_no_weight_decay(model: nn.Module) -> None:
    """Put the exempt parameters of ``model`` in the ``no_decay`` group (names unchanged)."""
    for name, param in model.named_parameters():
        if exempt_from_weight_decay(name, param):
            param.param_group = NO_DECAY
