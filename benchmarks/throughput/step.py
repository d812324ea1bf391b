"""One config's training step, built the way fairseq builds it (``setup_task`` ->
``build_model`` -> ``build_criterion`` -> ``build_optimizer``, batches through the task's
dataset, fairseq's batch iterator and the collater), and one update of it as fairseq's Trainer
runs it. Shared by the CPU benchmark, its profiler breakdown and ``gpu_throughput.py``."""
from __future__ import annotations

from typing import Dict, Optional

from .configs import config_label, family_of, load_yaml


def build(spec: str, data: str, max_tokens: int, threads: int, seed: Optional[int]):
    """Task, model, criterion, optimizer and an endless batch stream, as fairseq builds them."""
    import torch

    torch.set_num_threads(threads)
    from fairseq import optim, tasks
    from omegaconf import OmegaConf

    import d2v_plugin  # noqa: F401  (registers task, model, criterion)

    yaml = load_yaml(spec)
    seed = int(yaml.common.seed if seed is None else seed)
    # Only the sections the training step needs; ``common``/``optimization`` carry the values
    # the registered dataclasses interpolate (common.seed, common.tpu, optimization.lr).
    root = OmegaConf.create({
        "common": {"seed": seed, "tpu": False, "cpu": True},
        "optimization": {"lr": OmegaConf.to_container(yaml.optimization.lr)},
        "task": OmegaConf.to_container(yaml.task),
        "model": OmegaConf.to_container(yaml.model),
        "optimizer": OmegaConf.to_container(yaml.optimizer),
        "criterion": OmegaConf.to_container(yaml.criterion),
    })
    root.task.data = data
    family = family_of(root.model._name)

    torch.manual_seed(seed)
    task = tasks.setup_task(root.task)                 # merge_with_parent(registered dataclass)
    model = task.build_model(root.model)               # merge_with_parent inside fairseq
    criterion = task.build_criterion(root.criterion)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optim.build_optimizer(root.optimizer, params)

    task.load_dataset("train")
    dataset = task.dataset("train")
    longest = int(min(dataset.sizes.max(), root.task.get("max_sample_size") or dataset.sizes.max()))
    if max_tokens < longest:
        raise SystemExit(f"{config_label(spec)}: --max-tokens {max_tokens} is smaller than the longest "
                         f"(cropped) utterance, {longest} samples: fairseq cannot batch it")

    def batches():
        epoch = 1
        while True:
            itr = task.get_batch_iterator(
                dataset, max_tokens=max_tokens, max_sentences=None, max_positions=None,
                ignore_invalid_inputs=True, required_batch_size_multiple=1, seed=seed,
                num_shards=1, shard_id=0, num_workers=0, epoch=epoch,
            ).next_epoch_itr(shuffle=True)
            yield from itr
            epoch += 1

    if family == "d2v":
        recipe = ("d2v1 (encode masked, linear head)" if model.cfg.encode_masked
                  else "d2v2 (drop masked, conv decoder)")
        info = {
            "params_teacher": sum(p.numel() for p in model.teacher.model.parameters()) if model.teacher else 0,
            "clone_batch": int(model.cfg.clone_batch),
            "encode_masked": bool(model.cfg.encode_masked),
            "decoder_layers": int(model.cfg.modalities.audio.decoder.decoder_layers),
            "loss": "mse" if model.cfg.loss_beta == 0 else f"smooth_l1(beta={model.cfg.loss_beta})",
            "mask_prob": float(model.cfg.modalities.audio.mask_prob),
            "mask_length": int(model.cfg.modalities.audio.mask_length),
            "depth": int(model.cfg.depth), "embed_dim": int(model.cfg.embed_dim),
        }
    else:
        recipe = "w2v2 (encode masked, quantizer, InfoNCE)"
        info = {
            "params_teacher": 0, "clone_batch": 1, "encode_masked": True, "decoder_layers": 0,
            "loss": f"infonce({int(model.cfg.num_negatives)} negatives) + diversity",
            "mask_prob": float(model.cfg.mask_prob), "mask_length": int(model.cfg.mask_length),
            "depth": int(model.cfg.encoder_layers), "embed_dim": int(model.cfg.encoder_embed_dim),
        }
    info.update({
        "family": family,
        "model": str(root.model._name),
        "task": str(root.task._name),
        "criterion": str(root.criterion._name),
        "recipe": recipe,
        "params_student": sum(p.numel() for p in params),
        "yaml_max_tokens": int(yaml.dataset.max_tokens),
        "max_tokens": int(max_tokens),
        "utterances": len(dataset),
        "sample_rate": int(task.cfg.sample_rate),
        "seed": seed,
        "threads": torch.get_num_threads(),
    })
    return task, model, criterion, optimizer, batches(), info


def train_step(task, model, criterion, optimizer, sample, update_num: int, seed: int = 1):
    """The core of fairseq's Trainer.train_step for one batch (update_freq 1, fp32, 1 worker)."""
    import torch

    torch.manual_seed(seed + update_num)  # the Trainer reseeds every update the same way
    optimizer.zero_grad()
    loss, sample_size, logging_output = task.train_step(
        sample, model, criterion, optimizer, update_num=update_num)
    optimizer.multiply_grads(1.0 / float(sample_size or 1.0))
    grad_norm = optimizer.clip_grad_norm(0.0)
    if not torch.isfinite(grad_norm):
        raise FloatingPointError(f"non-finite gradient norm at update {update_num}")
    task.optimizer_step(optimizer, model=model, update_num=update_num)
    return float(loss), logging_output


def batch_stats(sample, model, sample_rate: int) -> Dict[str, float]:
    """Samples, seconds of audio, student rows and frames of one batch (every sample counts once)."""
    import torch

    source = sample["net_input"]["source"]
    mask = sample["net_input"].get("precomputed_mask")
    batch, samples = source.shape
    clones = getattr(model.cfg, "clone_batch", 1)
    if mask is not None:
        frames, kept = int(mask.size(1)), int(mask.size(1) - mask[0].sum())
    elif hasattr(model, "_get_feat_extract_output_lengths"):  # wav2vec 2.0: masks drawn in forward
        frames = int(model._get_feat_extract_output_lengths(torch.tensor(samples)))
        kept = frames
    else:
        frames = kept = 0
    return {"batch": batch, "audio_s": batch * samples / sample_rate, "rows": batch * clones,
            "frames": frames, "kept": kept}
