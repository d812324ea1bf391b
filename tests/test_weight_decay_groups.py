"""What the optimizer does to each parameter, built the way fairseq-hydra-train builds it (composed
yaml, resolved, fairseq's Trainer, its fp16 optimizer where the recipe turns fp16 on): weight decay
0 for exactly the layer-norm gains, biases and ALiBi scales, the configured decay for every other
tensor; the groups survive a restart from checkpoint_last; and wav2vec_ctc's layer-wise learning
-rate decay reaches the prenet and shared blocks of our model."""
import re
from pathlib import Path

import pytest
import torch
from fairseq import tasks
from fairseq.optim.composite import FairseqCompositeOptimizer
from fairseq.trainer import Trainer
from omegaconf import OmegaConf

import d2v_plugin  # noqa: F401  (registers the task, model and criterion)
from cli_utils import REPO, json_rows, run_hydra_train
from test_configs import compose

PRETRAINING = REPO / "config" / "pretraining"
FINETUNING = REPO / "config" / "finetuning"
TINY_SPEC = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"


@pytest.fixture(autouse=True)
def fresh_composite_registry(monkeypatch):
    """fairseq's composite optimizer keeps its per-group optimizers in CLASS-level dicts, so a
    second build in one process would inherit the first one's groups; a training run builds
    one optimizer (same group names on resume), so only tests that build several need this."""
    monkeypatch.setattr(FairseqCompositeOptimizer, "optimizers", {})
    monkeypatch.setattr(FairseqCompositeOptimizer, "lr_schedulers", {})


def build_trainer(path: Path, overrides, data: Path, edit=None):
    """(trainer, model) for a shipped config, as fairseq-hydra-train builds them on CPU."""
    # model keys with ++: the yamls list only what differs from the model's defaults
    cfg = compose(path, [f"task.data={data}", "common.cpu=true", "distributed_training.distributed_world_size=1",
                         *(f"++{o}" if o.startswith("model.") else o for o in overrides)])
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # what hydra_train does first
    if edit is not None:
        edit(cfg)
    if cfg.task._name == "data2vec_text_pretraining":  # the text task reads the vocabulary at setup
        (data / "dict.txt").write_text("".join(f"piece{i} {100 - i}\n" for i in range(40)))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    return Trainer(cfg, task, model, task.build_criterion(cfg.criterion)), model


def per_parameter(trainer: Trainer, model: torch.nn.Module, key: str):
    """{parameter name: (the value of ``key`` in its optimizer group, the tensor the optimizer updates)}.
    With fp16 the optimizer updates fp32 copies, kept in the order of model.parameters()."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = trainer.optimizer
    updated = optimizer.fp32_params if hasattr(optimizer, "fp32_params") else [p for _, p in named]
    assert isinstance(updated, list) and len(updated) == len(named)  # not flattened
    value_of = {}
    for group in getattr(optimizer, "fp32_optimizer", optimizer).param_groups:  # the composite's groups
        for p in group["params"]:
            assert id(p) not in value_of, "a parameter in two optimizer groups"
            value_of[id(p)] = group[key]
    return {n: (value_of[id(p32)], p32) for (n, _), p32 in zip(named, updated)}


def exempt(name: str, shape) -> bool:
    """The reference's rule, written out: 1-D tensors, every .bias, the ALiBi scales."""
    return len(shape) == 1 or name.endswith(".bias") or "alibi_scale" in name


CASES = {  # config: (overrides that keep it small, weight decay, fp16, parameters to spot-check)
    "base_image": (["model.depth=2", "model.average_top_k_layers=2"], 0.05, True,
                   {"modality_encoders.IMAGE.extra_tokens": False, "blocks.0.norm1.weight": True,
                    "blocks.0.attn.qkv.weight": False, "blocks.0.attn.qkv.bias": True}),
    "base_text": (["model.depth=2", "model.average_top_k_layers=2"], 0.01, True,
                  {"blocks.1.mlp.fc2.weight": False, "blocks.1.norm2.bias": True}),
    "large_audio": (["model.depth=2", "model.average_top_k_layers=2", "model.modalities.audio.prenet_depth=1"],
                    0.01, True, {"modality_encoders.AUDIO.alibi_scale": True,  # a 5-D tensor
                                 "modality_encoders.AUDIO.context_encoder.blocks.0.attn.proj.weight": False}),
    "tiny_image": ([], 0.05, False, {"blocks.3.norm2.weight": True, "blocks.3.mlp.fc1.weight": False}),
}


@pytest.mark.parametrize("config", sorted(CASES))
def test_optimizer_decays_every_matrix_and_no_norm_bias_or_alibi_scale(config, tmp_path):
    shrink, decay, fp16, spot = CASES[config]
    trainer, model = build_trainer(PRETRAINING / f"{config}.yaml", shrink, tmp_path)
    assert trainer.cfg.common.fp16 == fp16 and type(trainer.optimizer).__name__ == (
        "FP16Optimizer" if fp16 else "FairseqCompositeOptimizer")
    peak = trainer.cfg.optimization.lr[0]
    trainer.set_num_updates(trainer.cfg.optimizer.groups.default.lr_scheduler.warmup_updates)  # at the peak
    params = per_parameter(trainer, model, "weight_decay")
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for name, value in spot.items():
        assert exempt(name, shapes[name]) == value, name
    exempt_names = {n for n in params if exempt(n, shapes[n])}
    assert exempt_names and len(exempt_names) < len(params)
    wrong = {n: wd for n, (wd, _) in params.items() if wd != (0.0 if n in exempt_names else decay)}
    assert not wrong, wrong
    for name, (lr, _) in per_parameter(trainer, model, "lr").items():
        assert lr == pytest.approx(peak), name  # both groups on the same schedule

    # What the step does: with zero gradients Adam's update is 0, so only the decoupled decay moves
    # a weight, by the factor (1 - lr * weight_decay); exempt tensors stay bit-identical.
    before = {n: p32.detach().clone() for n, (_, p32) in params.items()}
    trainer.optimizer.zero_grad()
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    trainer.optimizer.step()
    for name, (_, p32) in params.items():
        if name in exempt_names:
            assert torch.equal(p32, before[name]), name
        else:
            assert torch.allclose(p32, before[name] * (1 - peak * decay), rtol=1e-6, atol=0), name
            assert not torch.equal(p32, before[name]) or not before[name].any(), name


def test_layer_decay_scales_the_learning_rate_of_every_prenet_and_shared_block(tmp_path):
    """large_10h fine-tuning (fairseq's wav2vec_ctc) on a large_audio-shaped checkpoint shrunk to
    2 prenet + 3 shared blocks: the i-th block from the top trains at layer_decay^i x lr, every
    other parameter at lr, in the tri-stage hold phase."""
    def tiny(cfg):
        cfg.model.modalities.audio.feature_encoder_spec = TINY_SPEC  # hydra overrides cannot carry it

    pretrain_dir = tmp_path / "pretrain"
    pretrain_dir.mkdir()
    pretrainer, _ = build_trainer(PRETRAINING / "large_audio.yaml", [
        "model.embed_dim=32", "model.num_heads=4", "model.depth=3", "model.average_top_k_layers=3",
        "model.modalities.audio.prenet_depth=2", "model.modalities.audio.decoder.decoder_dim=16",
        "model.modalities.audio.decoder.decoder_groups=4"], pretrain_dir, edit=tiny)
    pretrained = tmp_path / "pretrained.pt"
    pretrainer.consolidate_optimizer()  # as fairseq's checkpoint_utils.save_checkpoint does first
    pretrainer.save_checkpoint(str(pretrained), {"train_iterator": {"epoch": 1}})

    data = tmp_path / "ft"
    data.mkdir()
    (data / "dict.ltr.txt").write_text("".join(f"{c} {100 - i}\n" for i, c in enumerate("|ETAOINSHRDLU")))
    trainer, model = build_trainer(FINETUNING / "large_10h.yaml", [f"model.w2v_path={pretrained}"], data)
    decay, peak = trainer.cfg.model.layer_decay, trainer.cfg.optimization.lr[0]
    assert decay < 1
    trainer.set_num_updates(int(0.3 * trainer.cfg.optimization.max_update))  # hold phase: lr = peak x scale
    encoder = "w2v_encoder.w2v_model."
    prenet = re.compile(re.escape(encoder) + r"modality_encoders\.AUDIO\.context_encoder\.blocks\.(\d+)\.")
    shared = re.compile(re.escape(encoder) + r"blocks\.(\d+)\.")
    seen = set()
    for name, (lr, _) in per_parameter(trainer, model, "lr").items():
        if m := prenet.match(name):
            from_top, block = 5 - int(m.group(1)), f"prenet {m.group(1)}"
        elif m := shared.match(name):
            from_top, block = 3 - int(m.group(1)), f"shared {m.group(1)}"
        else:
            from_top, block = 0, None
        assert lr == pytest.approx(peak * decay ** from_top, rel=1e-9), (name, lr)
        seen.add(block)
    assert seen == {None, "prenet 0", "prenet 1", "shared 0", "shared 1", "shared 2"}


@pytest.mark.slow
def test_groups_and_their_adam_state_survive_a_restart_from_checkpoint_last(tmp_path):
    """tiny_image (composite optimizer, two named groups) through the real fairseq-hydra-train:
    4 updates straight, against 2 updates then the same command to 4 (fairseq restarts from
    checkpoint_last.pt). The restarted run logs the same losses and ends with the same Adam
    moments per group (to float32 rounding); restarted with the optimizer reset, its moments
    differ by more than 10 % (the check can fail)."""
    import make_image_corpus as mic

    mic.make_corpus(tmp_path / "digits", size=32, seed=1)

    def run(name, updates, *extra):
        return run_hydra_train("pretraining", "tiny_image", [
            f"task.data={tmp_path / 'digits'}", f"checkpoint.save_dir={tmp_path / name}",
            f"optimization.max_update={updates}",
            # the 2-update leg ends inside the warm-up, so every update sees the straight run's lr
            "optimizer.groups.default.lr_scheduler.warmup_updates=3",
            "common.log_format=json", "common.log_interval=1", "dataset.disable_validation=true",
            "checkpoint.save_interval_updates=0", *extra], cwd=tmp_path)

    def state(name):
        return torch.load(tmp_path / name / "checkpoint_last.pt", weights_only=True)["last_optimizer_state"]

    straight = json_rows(run("straight", 4).stdout)
    run("restarted", 2)
    restarted = json_rows(run("restarted", 4).stdout)
    assert [int(r["num_updates"]) for r in restarted] == [3, 4]
    assert [r["loss"] for r in restarted] == [r["loss"] for r in straight[2:]]

    def relative_difference(a, b, group):
        """Largest |a - b| / max |b| over the Adam moments of one group."""
        return max(((a[group]["state"][i][k] - moments[k]).abs().max() / moments[k].abs().max()).item()
                   for i, moments in b[group]["state"].items() for k in ("exp_avg", "exp_avg_sq"))

    expected, got = state("straight"), state("restarted")
    assert set(got) == {"default", "no_decay"}
    assert [g["weight_decay"] for g in got["default"]["param_groups"]] == [0.05]
    assert [g["weight_decay"] for g in got["no_decay"]["param_groups"]] == [0.0]
    for group in ("default", "no_decay"):
        assert got[group]["state"].keys() == expected[group]["state"].keys()
        # float32 rounding differs between processes (measured: at most 4e-7 relative)
        assert relative_difference(got, expected, group) < 1e-5, group

    run("reset", 2)
    run("reset", 4, "checkpoint.reset_optimizer=true")
    reset = state("reset")
    assert relative_difference(reset, expected, "default") > 0.1  # moments from 2 updates, not 4
