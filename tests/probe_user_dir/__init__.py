"""A fairseq user dir for tests: d2v_plugin plus one more task, ``data2vec_pretraining_probe``.

The probe task *is* ``data2vec_pretraining`` (same class, same config dataclass, looked up in
fairseq's registries); its ``train_step`` calls the real one and then only observes, unless
asked to break a gradient:

* ``PROBE_DIR=<dir>``: after every forward/backward, append what ``train_step`` returned on this
  rank (loss, sample_size, target_var, pred_var, the sample ids) to ``<dir>/rank<R>.jsonl`` and
  save this rank's EMA teacher (the weights and the update it caught up with) to
  ``<dir>/teacher_rank<R>.pt`` (the first one also to ``teacher_rank<R>_first.pt``). fairseq
  saves checkpoints on rank 0 only, so this is how a test sees every rank's teacher.
* ``PROBE_NAN_GRAD_AT=<u>``: after the backward of update ``u`` (0-based), set one gradient
  entry to NaN: the loss stays finite, the gradient norm does not.

Use it with ``common.user_dir=<this folder> task._name=data2vec_pretraining_probe``.
"""
import json
import os

import torch
import torch.distributed as dist
from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY, register_task

import d2v_plugin  # noqa: F401  (registers data2vec_pretraining, data2vec_multi, data2vec)

NAME = "data2vec_pretraining_probe"
_Base = TASK_REGISTRY["data2vec_pretraining"]


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _value(x):
    return float(x) if torch.is_tensor(x) or isinstance(x, (int, float)) else x


if NAME not in TASK_REGISTRY:
    @register_task(NAME, dataclass=TASK_DATACLASS_REGISTRY["data2vec_pretraining"])
    class ProbeTask(_Base):
        def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False, **kwargs):
            loss, sample_size, log = super().train_step(sample, model, criterion, optimizer, update_num,
                                                        ignore_grad=ignore_grad, **kwargs)
            nan_at = os.environ.get("PROBE_NAN_GRAD_AT")
            if nan_at is not None and update_num == int(nan_at):
                grad = next(p.grad for p in model.parameters() if p.grad is not None)
                grad.view(-1)[0] = float("nan")
            out = os.environ.get("PROBE_DIR")
            if out:
                rank = _rank()
                row = {"update": update_num, "rank": rank, "ids": sample["id"].tolist()}
                row.update({k: _value(log[k]) for k in ("loss", "sample_size", "target_var", "pred_var", "nsentences")
                            if k in log})
                with open(os.path.join(out, f"rank{rank}.jsonl"), "a") as f:
                    f.write(json.dumps(row) + "\n")
                inner = model
                while not hasattr(inner, "teacher") and hasattr(inner, "module"):  # DDP wrappers
                    inner = inner.module
                teacher = inner.teacher
                state = {"num_updates": teacher.num_updates, "state": teacher.state_dict()}
                torch.save(state, os.path.join(out, f"teacher_rank{rank}.pt"))
                first = os.path.join(out, f"teacher_rank{rank}_first.pt")
                if not os.path.exists(first):
                    torch.save(state, first)
            return loss, sample_size, log
