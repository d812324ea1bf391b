"""Every shipped config composes through the real fairseq-hydra-train (``--cfg job`` prints
the composed config without training) and builds its task and model."""
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from cli_utils import HYDRA_TRAIN

REPO = Path(__file__).resolve().parent.parent
PRETRAINING = sorted((REPO / "config" / "pretraining").glob("*.yaml"))


def compose(path: Path, overrides, cwd=REPO):
    proc = subprocess.run([HYDRA_TRAIN, "--config-dir", str(path.parent), "--config-name", path.stem,
                           *overrides, "--cfg", "job"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return OmegaConf.create(yaml.safe_load(proc.stdout))


@pytest.mark.parametrize("path", PRETRAINING, ids=lambda p: p.stem)
def test_pretraining_config_composes_and_builds_the_model(path, tmp_path):
    import d2v_plugin  # noqa: F401
    from fairseq import tasks
    from fairseq.dataclass.initialize import add_defaults

    cfg = compose(path, [f"task.data={tmp_path}", "optimization.max_update=123",
                         f"checkpoint.save_dir={tmp_path / 'ckpt'}"])
    add_defaults(cfg)  # the yamls set only what differs from the dataclass defaults; the trainer does this
    assert cfg.task.data == str(tmp_path) and cfg.optimization.max_update == 123
    # TensorBoard on in every pretraining config, beside the run's checkpoints
    assert OmegaConf.to_container(cfg.common, resolve=True)["tensorboard_logdir"] == str(tmp_path / "ckpt" / "tb")
    assert (REPO / cfg.common.user_dir).resolve() == REPO / "d2v_plugin"  # default: relative to the repo
    if cfg.task._name == "data2vec_text_pretraining":  # the text task reads the vocabulary at setup
        (tmp_path / "dict.txt").write_text("".join(f"piece{i} {100 - i}\n" for i in range(40)))
    task = tasks.setup_task(cfg.task)
    if cfg.model.embed_dim > 128:  # keep the base/large configs cheap: same code path, one block
        cfg.model.depth, cfg.model.average_top_k_layers = 1, 1
        modality = cfg.model.modalities[cfg.model.supported_modality.lower()]
        modality.prenet_depth = min(modality.get("prenet_depth", 0), 1)
    task.build_model(cfg.model)
    assert task.clone_batch == cfg.model.clone_batch  # every MaskedPretrainingTask
    # the 1.0 recipe encodes one masked view; 2.0 recipes drop masked steps, with M >= 1 views
    # (tiny and small recipes use M = 4 at most: docs/efficiency.md)
    assert cfg.model.get("encode_masked", False) == path.stem.endswith("_d2v1")
    if cfg.model.get("encode_masked", False):
        assert cfg.model.clone_batch == 1


# The reference fine-tuning budgets (docs/speech.md, "ASR fine-tuning and decoding"): updates,
# learning rate, layerdrop per reference split.
FINETUNING = {"base_10m": (13000, 5e-5, 0.05), "base_1h": (13000, 5e-5, 0.05), "base_10h": (20000, 5e-5, 0.05),
              "base_100h": (80000, 3e-5, 0.05), "base_960h": (320000, 3e-5, 0.1)}


@pytest.mark.parametrize("name", sorted(FINETUNING))
def test_finetuning_config_composes_with_the_reference_budget(name, tmp_path):
    cfg = compose(REPO / "config" / "finetuning" / f"{name}.yaml",
                  [f"task.data={tmp_path}", f"model.w2v_path={tmp_path / 'pretrained.pt'}"])
    updates, lr, layerdrop = FINETUNING[name]
    assert cfg.optimization.max_update == updates and cfg.optimization.lr == [lr]
    assert cfg.model._name == "wav2vec_ctc" and cfg.model.layerdrop == layerdrop
    assert cfg.model.mask_prob == 0.65 and cfg.model.mask_channel_prob == 0.5
    assert cfg.model.mask_channel_length == 64 and cfg.model.feature_grad_mult == 0.0
    assert cfg.lr_scheduler.phase_ratio == [0.1, 0.4, 0.5]
    assert cfg.checkpoint.best_checkpoint_metric == "wer" and cfg.task.normalize


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny_text_classification", "base_text_classification"])
def test_text_classification_config_composes_and_builds_on_a_text_checkpoint(name, text_pipeline_prepared,
                                                                             text_pipeline_trained, tmp_path):
    """fairseq's sentence_prediction task + our model, built on the session's tiny text checkpoint
    (the architecture comes from the checkpoint, so base and tiny build the same encoder here)."""
    import d2v_plugin  # noqa: F401
    from d2v_plugin.text.classification_prep import prepare_classification
    from fairseq import tasks

    _, corpus, data_bin = text_pipeline_prepared
    checkpoint = text_pipeline_trained[0] / "ckpt" / "checkpoint_last.pt"
    prepare_classification(str(corpus), str(data_bin), str(tmp_path / "topic"))
    cfg = compose(REPO / "config" / "finetuning" / f"{name}.yaml",
                  [f"task.data={tmp_path / 'topic'}", "task.num_classes=10", f"model.model_path={checkpoint}"])
    assert cfg.task._name == "sentence_prediction" and cfg.task.d2v2_multi and cfg.task.init_token == 0
    assert cfg.criterion._name == "sentence_prediction" and cfg.model._name == "data2vec_classification"
    assert cfg.checkpoint.best_checkpoint_metric == "accuracy" and cfg.checkpoint.maximize_best_checkpoint_metric
    assert cfg.dataset.required_batch_size_multiple == 1
    cfg.task.max_positions = 64  # the tiny checkpoint's max_source_positions
    # --cfg job prints only the criterion keys the yaml sets; the trainer adds the dataclass defaults
    OmegaConf.update(cfg, "criterion.regression_target", False, force_add=True)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    logits, _ = model(source=torch.tensor([[0, 5, 6, 7, 2, 1]]), classification_head_name="sentence_classification_head")
    assert logits.shape == (1, 10)


# fairseq's published large (LV-60k) fine-tuning recipes, examples/wav2vec/config/finetuning/vox_*.yaml:
# updates, learning rate, time mask prob, channel mask prob, GPUs x update_freq.
LARGE_FINETUNING = {"large_10m": (13000, 1e-4, 0.65, 0.25, 4, 5), "large_1h": (13000, 3e-4, 0.75, 0.25, 4, 5),
                    "large_10h": (20000, 1e-4, 0.75, 0.25, 4, 5), "large_100h": (80000, 3e-5, 0.5, 0.5, 4, 5),
                    "large_960h": (320000, 3e-5, 0.5, 0.25, 24, 1)}


@pytest.mark.parametrize("name", sorted(LARGE_FINETUNING))
def test_large_finetuning_config_composes_with_the_published_budget_and_layer_decay(name, tmp_path):
    cfg = compose(REPO / "config" / "finetuning" / f"{name}.yaml",
                  [f"task.data={tmp_path}", f"model.w2v_path={tmp_path / 'pretrained.pt'}"])
    updates, lr, mask_prob, channel_prob, gpus, update_freq = LARGE_FINETUNING[name]
    assert cfg.optimization.max_update == updates and cfg.optimization.lr == [lr]
    assert cfg.model.mask_prob == mask_prob and cfg.model.mask_channel_prob == channel_prob
    assert cfg.distributed_training.distributed_world_size == gpus
    assert cfg.optimization.update_freq == [update_freq]
    assert cfg.dataset.max_tokens == 1280000 and cfg.model.layerdrop == 0.1
    assert 0 < cfg.model.layer_decay < 1 and cfg.model.feature_grad_mult == 0.0
    # layer_decay is applied only by the composite optimizer with dynamic groups; the pretrained
    # model's no_decay group needs its own entry; fp16 must keep one tensor per parameter
    assert cfg.optimizer._name == "composite" and cfg.optimizer.dynamic_groups
    assert set(cfg.optimizer.groups) == {"default", "no_decay"} and cfg.lr_scheduler._name == "pass_through"
    assert cfg.optimizer.groups.default.lr_scheduler.phase_ratio == [0.1, 0.4, 0.5]
    assert cfg.common.fp16_no_flatten_grads
