"""The EMA teacher: a frozen copy of the student updated by an exponential moving average."""
import copy
from typing import Dict, Iterable

import torch
import torch.nn as nn


def ema_decay_at(update: int, start: float, end: float, anneal_end_step: int) -> float:
    """Decay moves linearly from ``start`` to ``end`` over ``anneal_end_step`` updates, then stays."""
    if start == end or update >= anneal_end_step:
        return end
    return start + (end - start) * update / anneal_end_step


class EMATeacher:
    """Teacher weights = EMA of the student's weights, kept in float32.

    Deliberately *not* an ``nn.Module`` attribute of the model: the teacher then stays out of
    the student's module tree, so fairseq's optimizer, DDP and fp16/bf16 casts never see it.
    Its weights are saved under the model's ``_ema`` state-dict key (the reference layout).
    ``num_updates`` is the training update the teacher last caught up with; it is saved too,
    so a resumed run applies exactly the EMA steps an uninterrupted run would.
    """

    def __init__(self, student: nn.Module, drop: Iterable[str] = ()):
        self.model = copy.deepcopy(student)
        for name in drop:  # parts the teacher does not need (decoder, local encoder...)
            parent, _, attr = name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, attr, None)
        self.model.requires_grad_(False)
        self.model.float().eval()
        self.decay = 0.0
        self.num_updates = 0
        self._names = [name for name, _ in self.model.named_parameters()]

    @torch.no_grad()
    def step(self, student: nn.Module, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * student, for every teacher parameter."""
        self.decay = decay
        student_params = dict(student.named_parameters())
        teacher_params = dict(self.model.named_parameters())
        t = [teacher_params[n] for n in self._names]
        s = [student_params[n].detach().to(device=p.device, dtype=p.dtype) for n, p in zip(self._names, t)]
        torch._foreach_mul_(t, decay)
        torch._foreach_add_(t, s, alpha=1.0 - decay)
        student_buffers = dict(student.named_buffers())
        for name, buf in self.model.named_buffers():
            if name in student_buffers:
                buf.copy_(student_buffers[name])

    def to(self, device: torch.device) -> None:
        self.model.to(device=device)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        params = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        params.update({n: b.detach().clone() for n, b in self.model.named_buffers()})
        return params

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        own = dict(self.model.named_parameters())
        own.update(dict(self.model.named_buffers()))
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"teacher (_ema) weights do not match the model: missing {missing}, "
                           f"unexpected {unexpected}")
        with torch.no_grad():
            for name, tensor in state.items():
                own[name].copy_(tensor)
