#!/usr/bin/env python3
"""CPU pretraining throughput and MFU: data2vec 2.0 (M = 8 and M = 1), the data2vec 1.0 recipe
and fairseq's built-in wav2vec 2.0, at the same encoder size, in one run.

For every config the training step is built the way fairseq builds it -- the yaml's
``model`` / ``task`` / ``optimizer`` / ``criterion`` sections composed with OmegaConf,
``setup_task`` -> ``task.build_model`` -> ``task.build_criterion`` -> ``optim.build_optimizer`` --
and batches come from the real corpus through the task's dataset, fairseq's batch iterator and
the dataset's collater (audio loading, cropping and, for data2vec, the M = clone_batch mask
sampling are all inside the timed step, as with ``dataset.num_workers=0``). One timed update is::

    next(batch iterator)                      # load + crop + collate (+ mask sampling)
    optimizer.zero_grad()
    task.train_step(...)                      # model.set_num_updates(i) (EMA teacher step),
                                              # criterion forward, backward
    optimizer.multiply_grads(1 / sample_size) # as fairseq's Trainer does
    optimizer.clip_grad_norm(clip_norm=0)     # the Trainer computes the grad norm every step
    task.optimizer_step(...)                  # fairseq's Adam

The wav2vec 2.0 peer (``benchmarks/configs/*_w2v2.yaml``) is fairseq's own ``wav2vec2`` model,
``audio_pretraining`` task and ``wav2vec`` criterion, built and stepped the same way. A config
can be varied with overrides after a ``+``: ``tiny_audio+model.clone_batch=1``.

Each config runs in its own subprocess, so its peak RSS (``ru_maxrss``) is its own. The configs
of one size are alive together and take turns, one update each: this machine is shared, and
interleaving makes all of them see the same background load (the data2vec configs also see the
same batches). Ratios are reported as ratios of means and as the median over rounds of the
per-round ratio of seconds per audio-second.

Model FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the last warm-up
update of each config (a real update: forward, backward, optimizer step; matmuls, convolutions
and attention), and a dense ``n x n`` fp32 matmul (``--matmul-n``, 4096) is timed with the same thread count
before every size group and at the end; "MFU" is the achieved model FLOP/s over the best matmul FLOP/s.

A second kind of subprocess (``--breakdown``) profiles the tiny data2vec 2.0 step with
torch.profiler and attributes forward *and* backward time to the model's parts.

On a busy machine (load average above the core count) ``--threads 2`` is dominated by
OpenMP threads waiting for a descheduled sibling; ``--threads 1`` then gives steadier ratios.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 python benchmarks/pretraining_throughput.py --threads 1 --out benchmarks/results_threads1.md

See benchmarks/README.md for the measured numbers and how to read them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import select
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
CONFIG_DIRS = [REPO / "config" / "pretraining", BENCH / "configs"]
DEFAULT_CONFIGS = [
    "tiny_audio", "tiny_audio+model.clone_batch=1", "tiny_audio_d2v1", "tiny_audio_w2v2",
    "base_audio", "base_audio+model.clone_batch=1", "base_audio_d2v1", "base_audio_w2v2",
]
MATMUL_N = 4096
MATMUL_REPS = 5
# Reduced batches for 2 CPU cores: the base yamls ask for 1.0M samples (62.5 s of audio)
# per GPU, which takes minutes per update here. Keys match config names by prefix.
DEFAULT_MAX_TOKENS = "tiny=160000,base=160000"
DEFAULT_STEPS = "tiny=20,base=3"
DEFAULT_WARMUP = "tiny=3,base=1"


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------
def per_config(spec: str, name: str, what: str) -> int:
    """``"20"`` -> 20 for every config; ``"tiny=20,base=3"`` -> the value of the longest
    key that prefixes ``name`` (``tiny_audio_d2v1=5`` beats ``tiny=20``)."""
    spec = str(spec).strip()
    if "=" not in spec:
        return int(spec)
    best = None
    for part in spec.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if name.startswith(key) and (best is None or len(key) > len(best[0])):
            best = (key, int(value))
    if best is None:
        raise SystemExit(f"--{what} {spec!r} has no entry for config {name!r}")
    return best[1]


def rss_mib() -> float:
    """Current resident set size (VmRSS) of this process, MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads), s."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def split_spec(spec: str):
    """``"tiny_audio+model.clone_batch=1,model.depth=2"`` -> ("tiny_audio", [(key, value), ...])."""
    base, _, over = spec.partition("+")
    overrides = []
    for item in filter(None, (o.strip() for o in over.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"config override {item!r} in {spec!r} is not key=value")
        overrides.append((key.strip(), value.strip()))
    return base, overrides


def resolve_config(name: str) -> Path:
    name = split_spec(name)[0]
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path.resolve()
    for folder in CONFIG_DIRS:
        path = folder / f"{name}.yaml"
        if path.exists():
            return path
    raise SystemExit(f"no config {name!r} (looked in {', '.join(str(d) for d in CONFIG_DIRS)})")


def config_label(spec: str) -> str:
    """A config's name in the tables: the yaml's stem plus its overrides (``tiny_audio+model.clone_batch=1``)."""
    base, overrides = split_spec(spec)
    return Path(base).stem + "".join(f"+{k}={v}" if i == 0 else f",{k}={v}"
                                     for i, (k, v) in enumerate(overrides))


def size_of(spec: str) -> str:
    """The size group of a config: the part of its name before the first ``_`` (tiny, base)."""
    return config_label(spec).split("_")[0]


def load_yaml(spec: str):
    """The yaml of a config spec with its overrides applied (values parsed as YAML)."""
    import yaml as pyyaml
    from omegaconf import OmegaConf

    conf = OmegaConf.load(resolve_config(spec))
    for key, value in split_spec(spec)[1]:
        OmegaConf.update(conf, key, pyyaml.safe_load(value), merge=True)
    return conf


def family_of(model_name: str) -> str:
    return "w2v2" if model_name == "wav2vec2" else "d2v"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


# --------------------------------------------------------------------------------------
# the worker: one config, one process
# --------------------------------------------------------------------------------------
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


def run_throughput(args, send, receive) -> None:
    """Build once, then obey the driver: ``run K`` -> K timed updates, ``finish`` -> summary.

    The driver alternates the configs of one size update by update, so both see the same
    background load (this machine is shared) and the same batches in the same order.
    """
    rss_python = rss_mib()
    import torch  # noqa: F401
    import fairseq  # noqa: F401
    import d2v_plugin  # noqa: F401
    rss_import = rss_mib()
    task, model, criterion, optimizer, stream, info = build(
        args.worker, args.data, args.max_tokens_n, args.threads, args.seed)
    info.update(config=config_label(args.worker), rss_python_mib=rss_python, rss_import_mib=rss_import,
                rss_after_build_mib=rss_mib())
    send(info)
    update = 0
    while True:
        command = receive()
        if command["cmd"] == "run":
            records = []
            for k in range(command["updates"]):
                # FLOPs are counted on the last update of a "count_flops" run (a warm-up one):
                # the counter's per-op overhead never touches a timed update.
                count = bool(command.get("count_flops")) and k == command["updates"] - 1
                c0 = cpu_seconds()
                t0 = time.perf_counter()
                sample = next(stream)
                t1 = time.perf_counter()

                def step():
                    return train_step(task, model, criterion, optimizer, sample, update_num=update,
                                      seed=info["seed"])
                if count:
                    from flops import count_flops
                    (loss, _), flops, flops_by_op = count_flops(step)
                else:
                    loss, _ = step()
                t2 = time.perf_counter()
                c2 = cpu_seconds()
                rec = batch_stats(sample, model, info["sample_rate"])
                rec.update(update=update, shape=list(sample["net_input"]["source"].shape),
                           data_s=t1 - t0, step_s=t2 - t1, total_s=t2 - t0, cpu_s=c2 - c0, loss=loss,
                           warmup=bool(command.get("warmup")), load=os.getloadavg()[0])
                if count:
                    rec.update(flops=flops, flops_by_op=flops_by_op)
                records.append(rec)
                update += 1
            send({"records": records})
        elif command["cmd"] == "finish":
            send({"peak_rss_mib": peak_rss_mib(), "rss_end_mib": rss_mib()})
            return
        else:
            raise ValueError(f"unknown command {command!r}")


def summarize(info: Dict, records: List[Dict], final: Dict) -> Dict:
    timed = [r for r in records if not r["warmup"]]
    steps = len(timed)
    total = sum(r["total_s"] for r in timed)
    audio = sum(r["audio_s"] for r in timed)
    rows = sum(r["rows"] for r in timed)
    per_update = sorted(r["total_s"] for r in timed)
    result = dict(info)
    result.update(final)
    result.update(
        steps=steps,
        warmup=len(records) - steps,
        sec_per_update=total / steps,
        median_sec_per_update=median(per_update),
        min_sec_per_update=per_update[0],
        updates_per_s=steps / total,
        audio_s_per_s=audio / total,
        median_audio_s_per_s=median([r["audio_s"] / r["total_s"] for r in timed]),
        best_audio_s_per_s=max(r["audio_s"] / r["total_s"] for r in timed),
        cpu_utilization=sum(r["cpu_s"] for r in timed) / total,
        mean_loadavg=sum(r["load"] for r in timed) / steps,
        student_rows_per_s=rows / total,
        samples_per_update=sum(r["batch"] for r in timed) / steps,
        audio_s_per_update=audio / steps,
        rows_per_update=rows / steps,
        frames_per_row=sum(r["frames"] for r in timed) / steps,
        kept_frames_per_row=sum(r["kept"] for r in timed) / steps,
        data_fraction=sum(r["data_s"] for r in timed) / total,
        final_loss=timed[-1]["loss"],
        records=records,
    )
    counted = [r for r in records if "flops" in r]
    if counted:
        # FLOPs of the counted update, per second of its audio: every part of the model scales
        # linearly with the audio except attention (quadratic in frames, ~1-3 % of the FLOPs
        # here), so FLOPs per timed update = this x the timed updates' mean audio.
        c = counted[-1]
        result.update(
            flops_counted_update=c["flops"],
            flops_counted_audio_s=c["audio_s"],
            flops_counted_shape=c["shape"],
            flops_by_op=c["flops_by_op"],
            flops_per_audio_s=c["flops"] / c["audio_s"],
            flops_per_update=c["flops"] / c["audio_s"] * audio / steps,
            achieved_flops_per_s=c["flops"] / c["audio_s"] * audio / total,
            best_achieved_flops_per_s=c["flops"] / c["audio_s"] * max(r["audio_s"] / r["total_s"] for r in timed),
        )
    return result


# --------------------------------------------------------------------------------------
# the breakdown: where the time of one data2vec 2.0 update goes
# --------------------------------------------------------------------------------------
PARTS = {
    "data: load + crop + collate": "data (load audio, crop, collate)",
    "data: mask sampling": "data: mask sampling in the collater (M masks/sample)",
    "ema teacher step": "EMA teacher update (model.set_num_updates)",
    "feature encoder": "feature encoder (conv) + projection",
    "student mask index": "student: mask -> index tensors",
    "student contextualize": "student: mask, conv positions, drop masked, ALiBi",
    "student blocks": "student transformer blocks",
    "decoder": "decoder (conv, or linear head)",
    "teacher": "teacher forward (no grad) + top-K targets",
    "loss + stats": "loss + variance monitors",
    "grad scale + norm": "grad scaling + grad norm",
    "adam": "Adam step",
    "zero_grad": "zero_grad",
    "(grad accumulation)": "backward: accumulating into .grad",
    "(other forward glue)": "backward of unlabelled forward ops (repeat_interleave of the local features, ...)",
}


def _label(name, fn):
    from torch.profiler import record_function

    def wrapped(*a, **kw):
        with record_function(name):
            return fn(*a, **kw)
    return wrapped


def instrument(model, optimizer, dataset) -> None:
    """Label the parts of a step with record_function, in this process only (no library edit).

    Instance attributes shadow the public stage methods (local_features, contextualize, decode,
    student_masks, run_blocks, teacher_targets, objective); the teacher is a deep copy made when
    the model was built, so its encoder is not wrapped and its whole forward counts as "teacher".
    """
    encoder = next(iter(model.modality_encoders.values()))
    encoder.local_features = _label("feature encoder", encoder.local_features)
    encoder.contextualize = _label("student contextualize", encoder.contextualize)
    encoder.decode = _label("decoder", encoder.decode)
    model.student_masks = _label("student mask index", model.student_masks)
    model.teacher_targets = _label("teacher", model.teacher_targets)
    model.objective = _label("loss + stats", model.objective)
    run_blocks = model.run_blocks

    def student_blocks(blocks, *a, **kw):
        if blocks is model.blocks:
            return _label("student blocks", run_blocks)(blocks, *a, **kw)
        return run_blocks(blocks, *a, **kw)
    model.run_blocks = student_blocks
    if model.teacher is not None:
        model.teacher.step = _label("ema teacher step", model.teacher.step)
    optimizer.multiply_grads = _label("grad scale + norm", optimizer.multiply_grads)
    optimizer.clip_grad_norm = _label("grad scale + norm", optimizer.clip_grad_norm)
    optimizer.step = _label("adam", optimizer.step)
    optimizer.zero_grad = _label("zero_grad", optimizer.zero_grad)
    from d2v_plugin.data.expander import BatchExpander

    expander = dataset.expander  # the collater's expander, with a labelled mask sampler
    dataset.expander = BatchExpander(expander.clone_batch, _label("data: mask sampling", expander.mask_sampler))


NODE_PREFIX = "autograd::engine::evaluate_function"


def attribute(events, labels) -> Dict[str, Dict]:
    """Split one profiled update by part: forward and backward time per label, and the self
    time of every op per (op, label), all in us.

    Forward time of a label excludes labels nested in it. A backward node
    ("autograd::engine::evaluate_function: XBackward") carries the sequence number of its
    autograd node; the forward op that created the node is the *last* forward op recorded
    with that number (ops that create no node record the next number without taking it), and
    that op's innermost label owns the node's backward time.
    """
    def innermost(e):
        while e is not None:
            if e.name in labels:
                return e.name
            e = e.cpu_parent
        return None

    def node_of(e):
        while e is not None:
            if e.name.startswith(NODE_PREFIX):
                return e
            e = e.cpu_parent
        return None

    forward, backward, ops = defaultdict(float), defaultdict(float), defaultdict(float)
    creator = {}  # (thread, sequence_nr) -> (start time, label)
    nodes = {}
    for e in events:
        node = node_of(e)
        nodes[id(e)] = node
        if node is not None:
            continue
        if e.name in labels:
            nested = sum(c.cpu_time_total for c in _descendant_labels(e, labels))
            forward[e.name] += e.cpu_time_total - nested
        if e.sequence_nr is not None and e.sequence_nr >= 0:
            key = (e.thread, e.sequence_nr)
            start = e.time_range.start
            if key not in creator or start >= creator[key][0]:
                creator[key] = (start, innermost(e))

    def node_owner(node):
        if "AccumulateGrad" in node.name:
            return "(grad accumulation)"
        owner = creator.get((node.fwd_thread, node.sequence_nr)) if node.sequence_nr >= 0 else None
        return (owner and owner[1]) or "(other forward glue)"

    for e in events:
        node = nodes[id(e)]
        if e is node:
            backward[node_owner(e)] += e.cpu_time_total
        if e.name in labels or e.name == "update" or e.name.startswith(NODE_PREFIX):
            continue
        if node is not None:
            ops[(e.name, node_owner(node) + " (backward)")] += e.self_cpu_time_total
        else:
            ops[(e.name, innermost(e) or "(unlabelled)")] += e.self_cpu_time_total
    return {"forward": dict(forward), "backward": dict(backward), "ops": dict(ops)}


def _descendant_labels(e, labels):
    """The outermost labelled events strictly inside ``e``."""
    out = []
    stack = list(e.cpu_children)
    while stack:
        c = stack.pop()
        if c.name in labels:
            out.append(c)
        else:
            stack.extend(c.cpu_children)
    return out


def median(values: List[float]) -> float:
    q = sorted(values)
    if not q:
        return float("nan")
    mid = len(q) // 2
    return q[mid] if len(q) % 2 else 0.5 * (q[mid - 1] + q[mid])


def run_breakdown(args) -> Dict:
    """Profile ``steps`` updates one by one; every number reported is a median over updates,
    which keeps updates slowed down by other processes on this shared machine out."""
    from torch.profiler import ProfilerActivity, profile, record_function

    task, model, criterion, optimizer, stream, info = build(
        args.worker, args.data, args.max_tokens_n, args.threads, args.seed)
    if info["family"] != "d2v":
        raise SystemExit(f"--breakdown profiles the parts of a data2vec model; {args.worker} is {info['model']}")
    steps, warmup = args.steps_n, args.warmup_n
    for i in range(warmup):
        train_step(task, model, criterion, optimizer, next(stream), update_num=i, seed=info["seed"])
    instrument(model, optimizer, task.dataset("train"))
    labels = set(PARTS) - {"(grad accumulation)", "(other forward glue)"}
    per_update = []
    for i in range(warmup, warmup + steps):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            with record_function("update"):
                with record_function("data: load + crop + collate"):
                    sample = next(stream)
                train_step(task, model, criterion, optimizer, sample, update_num=i, seed=info["seed"])
            wall = time.perf_counter() - t0
        events = prof.events()
        parts = attribute(events, labels)
        parts["update"] = sum(e.cpu_time_total for e in events if e.name == "update")
        parts["wall"] = wall
        parts["audio_s"] = batch_stats(sample, model, info["sample_rate"])["audio_s"]
        per_update.append(parts)

    def med(key, part):
        return median([u[key].get(part, 0.0) for u in per_update]) / 1e3

    update_ms = median([u["update"] for u in per_update]) / 1e3
    keys = set().union(*(set(u["forward"]) | set(u["backward"]) for u in per_update))
    rows = []
    for key in list(PARTS) + sorted(keys - set(PARTS)):
        f, b = med("forward", key), med("backward", key)
        if f == 0 and b == 0:
            continue
        rows.append({"part": key, "description": PARTS.get(key, key), "forward_ms": f,
                     "backward_ms": b, "total_ms": f + b, "share": (f + b) / update_ms})
    known = sum(r["total_ms"] for r in rows)
    rows.append({"part": "(unlabelled)", "description": "everything else: Python glue outside the parts "
                 "(task.train_step, model.train(), criterion), autograd-engine overhead between backward "
                 "nodes, profiler overhead", "forward_ms": max(update_ms - known, 0.0),
                 "backward_ms": 0.0, "total_ms": max(update_ms - known, 0.0),
                 "share": max(update_ms - known, 0.0) / update_ms})
    op_keys = set().union(*(set(u["ops"]) for u in per_update))
    top_ops = sorted(({"op": op, "part": part, "self_ms": med("ops", (op, part))} for op, part in op_keys),
                     key=lambda o: o["self_ms"], reverse=True)[:args.top_ops]
    for o in top_ops:
        o["share"] = o["self_ms"] / update_ms
    result = dict(info)
    result.update(config=config_label(args.worker), steps=steps, warmup=warmup,
                  profiled_update_ms=update_ms,
                  wall_ms_per_update=[1e3 * u["wall"] for u in per_update],
                  audio_s_per_update=median([u["audio_s"] for u in per_update]),
                  parts=rows, top_ops=top_ops, peak_rss_mib=peak_rss_mib())
    return result


# --------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------
class Worker:
    """One config in its own process; JSON lines over its stdin / a private stdout."""

    def __init__(self, kind: str, config: str, args, steps: int, warmup: int, max_tokens: int,
                 logdir: Path):
        self.config, self.kind, self.timeout = config, kind, args.timeout
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", config_label(config) if kind != "matmul" else config)
        self.log_path = logdir / f"{safe}.{kind}.log"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", config, "--kind", kind,
               "--data", str(args.data), "--threads", str(args.threads), "--steps", str(steps),
               "--warmup", str(warmup), "--max-tokens", str(max_tokens)]
        if args.seed is not None:
            cmd += ["--seed", str(args.seed)]
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.threads)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONWARNINGS", "ignore")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, bufsize=1)

    def send(self, message: Dict) -> None:
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> Dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.fail("no answer" if ready else f"no answer within {self.timeout:.0f} s")
        return json.loads(line)

    def fail(self, why: str) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.flush()
        tail = self.log_path.read_text()[-6000:]
        sys.stderr.write(tail)
        raise SystemExit(f"{self.kind} run of {self.config} failed: {why} (exit {self.proc.returncode}); "
                         f"log above ({self.log_path})")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def groups_of(configs: List[str]) -> List[List[str]]:
    """Configs of one size run together (interleaved): every tiny_* config, then every base_* one."""
    groups: Dict[str, List[str]] = {}
    for c in configs:
        groups.setdefault(size_of(c), []).append(c)
    return list(groups.values())


def run_matmul(args, logdir: Path, label: str) -> Dict:
    """Time a dense fp32 matmul in a fresh process with the benchmark's thread count."""
    w = Worker("matmul", "matmul", args, MATMUL_REPS, 1, args.matmul_n, logdir)
    try:
        result = w.receive()
    finally:
        w.close()
    result.update(when=label, load=os.getloadavg()[0])
    return result


def run_group(configs: List[str], args, logdir: Path, t_start: float) -> List[Dict]:
    def log(msg):
        print(f"[{time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    # FLOPs are counted on the last warm-up update, so every config gets at least one.
    plan = {c: (per_config(args.steps, config_label(c), "steps"),
                max(1, per_config(args.warmup, config_label(c), "warmup")),
                per_config(args.max_tokens, config_label(c), "max-tokens")) for c in configs}
    workers, infos, records = {}, {}, {c: [] for c in configs}
    try:
        for c in configs:  # build one at a time: model building is not timed, but keep it quiet
            steps, warmup, max_tokens = plan[c]
            log(f"{config_label(c)}: building (max_tokens={max_tokens}, warmup={warmup}, steps={steps})")
            workers[c] = Worker("throughput", c, args, steps, warmup, max_tokens, logdir)
            infos[c] = workers[c].receive()
        for c in configs:
            log(f"{config_label(c)}: {plan[c][1]} warm-up update(s), FLOPs counted on the last")
            workers[c].send({"cmd": "run", "updates": plan[c][1], "warmup": True, "count_flops": True})
            records[c] += workers[c].receive()["records"]
        # Round robin, one update at a time: all configs see the same background load (and
        # the data2vec ones the same batches).
        left = {c: plan[c][0] for c in configs}
        t_rounds = time.perf_counter()
        while any(left.values()):
            done = min(plan[c][0] - left[c] for c in configs)
            if done >= 2 and time.perf_counter() - t_rounds > args.max_group_seconds:
                log(f"  --max-group-seconds {args.max_group_seconds:.0f} reached: stopping after {done} "
                    f"timed updates per config (machine busy?)")
                break
            for c in configs:
                if left[c]:
                    workers[c].send({"cmd": "run", "updates": 1})
                    rec = workers[c].receive()["records"]
                    records[c] += rec
                    left[c] -= 1
            log("  " + ", ".join(f"{config_label(c)} {records[c][-1]['total_s']:.2f}s" for c in configs)
                + f"  (load {os.getloadavg()[0]:.1f})")
        results = []
        for c in configs:
            workers[c].send({"cmd": "finish"})
            r = summarize(infos[c], records[c], workers[c].receive())
            log(f"{config_label(c)}: {r['sec_per_update']:.3f} s/update, {r['audio_s_per_s']:.2f} audio-s/s, "
                f"{r.get('achieved_flops_per_s', float('nan')) / 1e9:.2f} GFLOP/s, "
                f"peak RSS {r['peak_rss_mib']:.0f} MiB")
            results.append(r)
        return results
    finally:
        for w in workers.values():
            w.close()


def run_breakdown_process(config: str, args, logdir: Path) -> Dict:
    w = Worker("breakdown", config, args, args.breakdown_steps,
               per_config(args.warmup, config_label(config), "warmup"),
               per_config(args.max_tokens, config_label(config), "max-tokens"), logdir)
    try:
        return w.receive()
    finally:
        w.close()


def _g(value: Optional[float], scale: float = 1e9, fmt: str = "{:.2f}") -> str:
    return "n/a" if value is None else fmt.format(value / scale)


def to_markdown(report: Dict) -> str:
    m = report["meta"]
    lines = [
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['threads']} torch threads, torch {m['torch']}, "
        f"fairseq {m['fairseq']}, Python {m['python']}; {m['date']}; total runtime {m['runtime_s']:.0f} s; "
        f"1-min load average {m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end.",
        f"Corpus: `{m['data']}`. Command: `{m['command']}`",
        "",
        "| config | recipe | params | M | max_tokens used (yaml) | timed updates "
        "| audio s / update | student rows / update | s / update: mean (median) | updates/s "
        "| audio-s/s: mean (median, best) | data % | CPU util | load | peak RSS MiB (after import) "
        "| GFLOP / update | GFLOP/s | MFU vs matmul |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    busy = [r for r in report["results"] if r["mean_loadavg"] > m["cores"] + 0.5 and r["threads"] > 1]
    if busy:
        lines[2:2] = ["", f"**Busy machine**: the 1-min load average exceeded the {m['cores']} cores during "
                      f"{', '.join(r['config'] for r in busy)}; with {m['threads']} threads per process the "
                      f"absolute numbers suffer most (compare a `--threads 1` run)."]
    if not report["results"]:
        lines = lines[:3]
    for r in report["results"]:
        mfu = r.get("mfu")
        lines.append(
            f"| {r['config']} | {r['recipe']} | {r['params_student'] / 1e6:.2f}M | {r['clone_batch']} "
            f"| {r['max_tokens']:,} ({r['yaml_max_tokens']:,}) | {r['steps']} "
            f"| {r['audio_s_per_update']:.1f} | {r['rows_per_update']:.0f} "
            f"| {r['sec_per_update']:.3f} ({r['median_sec_per_update']:.3f}) | {r['updates_per_s']:.3f} "
            f"| {r['audio_s_per_s']:.2f} ({r['median_audio_s_per_s']:.2f}, {r['best_audio_s_per_s']:.2f}) "
            f"| {100 * r['data_fraction']:.1f} | {r['cpu_utilization']:.2f} "
            f"| {r['mean_loadavg']:.1f} | {r['peak_rss_mib']:.0f} ({r['rss_import_mib']:.0f}) "
            f"| {_g(r.get('flops_per_update'), 1e9, '{:.1f}')} | {_g(r.get('achieved_flops_per_s'))} "
            f"| {'n/a' if mfu is None else f'{100 * mfu:.1f}%'} |")
    mm = report.get("matmul") or []
    if mm:
        peak = report["matmul_peak_flops_per_s"]
        runs = ", ".join(f"{x['when']} {x['best_flops_per_s'] / 1e9:.1f} (median {x['median_flops_per_s'] / 1e9:.1f}, "
                         f"load {x['load']:.1f})" for x in mm)
        lines += ["", f"Measured dense matmul peak: {mm[0]['n']} x {mm[0]['n']} {mm[0]['dtype']} matmul, "
                  f"{m['threads']} thread(s), best of {mm[0]['reps']} timings per run: **{peak / 1e9:.1f} GFLOP/s** "
                  f"(runs, GFLOP/s: {runs}). GFLOP / update: model FLOPs counted with FlopCounterMode "
                  f"(matmul, conv, attention; forward + backward) on the last warm-up update, per second "
                  f"of its audio, times the timed updates' audio. MFU = GFLOP/s / matmul peak."]
    if report["ratios"]:
        lines += ["", "Ratios at equal encoder size (configs of one size interleaved update by update; "
                  "\"s per audio-s\" pairs the updates of one round, so differently sized batches compare "
                  "fairly):", "",
                  "| size | config / baseline | time per update: mean | s per audio-s: median of rounds "
                  "| audio-s/s: mean | audio-s/s: best | peak RSS | peak RSS above import "
                  "| model FLOPs per audio-s | achieved FLOP/s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for q in report["ratios"]:
            def x(key):
                return "n/a" if q.get(key) is None else f"{q[key]:.2f}x"
            lines.append(f"| {q['size']} | {q['config']} / {q['baseline']} | {x('time_per_update')} "
                         f"| {x('paired_median_s_per_audio_s')} | {x('audio_s_per_s')} | {x('best_audio_s_per_s')} "
                         f"| {x('peak_rss')} | {x('peak_rss_above_import')} | {x('flops_per_audio_s')} "
                         f"| {x('achieved_flops_per_s')} |")
    b = report.get("breakdown")
    if b:
        lines += ["", f"Where the time of one `{b['config']}` update goes (torch.profiler, medians over "
                  f"{b['steps']} individually profiled updates after {b['warmup']} warm-up, "
                  f"max_tokens {b['max_tokens']:,}, ~{b['audio_s_per_update']:.1f} s of audio per update; "
                  f"median profiled update {b['profiled_update_ms']:.0f} ms; backward time is attributed "
                  f"to the part whose forward op created the autograd node):", "",
                  "| part | forward ms | backward ms | total ms | share of update |", "|---|---|---|---|---|"]
        for p in sorted(b["parts"], key=lambda p: p["total_ms"], reverse=True):
            lines.append(f"| {p['description']} | {p['forward_ms']:.1f} | {p['backward_ms']:.1f} "
                         f"| {p['total_ms']:.1f} | {100 * p['share']:.1f}% |")
        lines += ["", "Top ops by self CPU time, per part (median ms per update):", "",
                  "| op | part | self ms | share |", "|---|---|---|---|"]
        for o in b["top_ops"]:
            lines.append(f"| `{o['op']}` | {o['part']} | {o['self_ms']:.1f} | {100 * o['share']:.1f}% |")
    return "\n".join(lines) + "\n"


def _timed(result: Dict) -> List[Dict]:
    return [r for r in result["records"] if not r["warmup"]]


def paired_median(a: Dict, b: Dict) -> Optional[float]:
    """Median over rounds of a's time / b's time per update; only when both saw the same batches."""
    pairs = list(zip(_timed(a), _timed(b)))
    if not pairs or any(x["shape"] != y["shape"] for x, y in pairs):
        return None
    return median([x["total_s"] / y["total_s"] for x, y in pairs])


def paired_median_per_audio(a: Dict, b: Dict) -> float:
    """Median over rounds (the k-th timed update of each config ran in the same round, back to
    back) of a's seconds per audio-second / b's: fair also when the batches differ."""
    return median([(x["total_s"] / x["audio_s"]) / (y["total_s"] / y["audio_s"])
                   for x, y in zip(_timed(a), _timed(b))])


def pick_baseline(results: List[Dict], choice: str) -> Optional[Dict]:
    """The config every other one of its size is compared to: 'auto' = the wav2vec 2.0 peer if
    present, else the data2vec 1.0 recipe; or 'w2v2', 'd2v1', or a config name."""
    w2v2 = [r for r in results if r["family"] == "w2v2"]
    d2v1 = [r for r in results if r["family"] == "d2v" and r["encode_masked"]]
    if choice == "auto":
        pool = w2v2 or d2v1
    elif choice == "w2v2":
        pool = w2v2
    elif choice == "d2v1":
        pool = d2v1
    else:
        pool = [r for r in results if r["config"] == choice or r["config"].split("_", 1)[-1] == choice]
    return pool[0] if pool else None


def ratios(results: List[Dict], baseline: str = "auto") -> List[Dict]:
    def ratio(a, b, key):
        return a[key] / b[key] if a.get(key) is not None and b.get(key) else None

    out = []
    sizes: Dict[str, List[Dict]] = {}
    for r in results:
        sizes.setdefault(r["config"].split("_")[0], []).append(r)
    for size, group in sizes.items():
        base = pick_baseline(group, baseline)
        if base is None:
            continue
        for r in group:
            if r is base:
                continue
            out.append({
                "size": size, "config": r["config"], "baseline": base["config"],
                "time_per_update": ratio(r, base, "sec_per_update"),
                "audio_s_per_s": ratio(r, base, "audio_s_per_s"),
                "median_audio_s_per_s": ratio(r, base, "median_audio_s_per_s"),
                "best_audio_s_per_s": ratio(r, base, "best_audio_s_per_s"),
                "peak_rss": ratio(r, base, "peak_rss_mib"),
                "peak_rss_above_import": (r["peak_rss_mib"] - r["rss_import_mib"])
                / max(base["peak_rss_mib"] - base["rss_import_mib"], 1e-9),
                "paired_median_time_ratio": paired_median(r, base),
                "paired_median_s_per_audio_s": paired_median_per_audio(r, base),
                "flops_per_audio_s": ratio(r, base, "flops_per_audio_s"),
                "achieved_flops_per_s": ratio(r, base, "achieved_flops_per_s"),
                "same_batches": [x["shape"] for x in r["records"]] == [x["shape"] for x in base["records"]],
            })
    return out


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS,
                   help="config names under config/pretraining or benchmarks/configs (or yaml paths), "
                        "optionally with overrides after a '+' (tiny_audio+model.clone_batch=1); default: "
                        "d2v2 M=8, d2v2 M=1, d2v1 and wav2vec 2.0 at tiny and base size; none with only --breakdown")
    p.add_argument("--steps", default=DEFAULT_STEPS,
                   help="timed updates per config: N, or per size like 'tiny=20,base=3' (default %(default)s)")
    p.add_argument("--warmup", default=DEFAULT_WARMUP,
                   help="untimed warm-up updates, N or per size (default %(default)s; at least 1: FLOPs "
                        "are counted on the last one; >= 2 includes an EMA step in every timed update)")
    p.add_argument("--max-tokens", default=DEFAULT_MAX_TOKENS,
                   help="batch size in audio samples (fairseq dataset.max_tokens), N or per size "
                        "(default %(default)s; the base yamls use 1,000,000 per GPU)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch intra-op threads (default: torch.get_num_threads() = %(default)s)")
    p.add_argument("--data", default=str(REPO / "data" / "speech_corpus"),
                   help="folder with the fairseq manifests (train.tsv); default %(default)s")
    p.add_argument("--seed", type=int, default=None, help="default: the yaml's common.seed")
    p.add_argument("--baseline", default="auto",
                   help="what the ratio table divides by, per size: auto (the wav2vec 2.0 peer if present, "
                        "else the data2vec 1.0 recipe), w2v2, d2v1, or a config name (default %(default)s)")
    p.add_argument("--matmul-n", type=int, default=MATMUL_N,
                   help="size of the dense fp32 matmul timed for the MFU reference, n x n @ n x n "
                        "(default %(default)s)")
    p.add_argument("--no-matmul", action="store_true",
                   help="skip the dense matmul timing (no MFU column)")
    p.add_argument("--breakdown", default="tiny_audio",
                   help="config whose d2v2 step is profiled part by part ('none' to skip)")
    p.add_argument("--breakdown-steps", type=int, default=5, help="profiled updates (default %(default)s)")
    p.add_argument("--top-ops", type=int, default=12, help=argparse.SUPPRESS)
    p.add_argument("--max-group-seconds", type=float, default=200,
                   help="stop timing a size group after this many seconds (keeping >= 2 timed updates "
                        "per config), so a busy machine cannot stretch the run (default %(default)s)")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds to wait for any single answer of a config subprocess")
    p.add_argument("--out", default=None,
                   help="write results here: .json -> JSON, anything else -> markdown (plus a .json next to it)")
    # internal: one config in a subprocess
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--kind", default="throughput", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        # Protocol on a private copy of stdout; anything the libraries print goes to stderr.
        channel = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

        def send(message):
            channel.write(json.dumps(message) + "\n")
            channel.flush()

        def receive():
            line = sys.stdin.readline()
            return json.loads(line) if line else {"cmd": "finish"}

        args.steps_n, args.warmup_n, args.max_tokens_n = int(args.steps), int(args.warmup), int(args.max_tokens)
        if args.kind == "breakdown":
            send(run_breakdown(args))
        elif args.kind == "matmul":
            import torch as _torch
            from flops import time_matmul

            _torch.set_num_threads(args.threads)
            send(time_matmul(args.max_tokens_n, reps=args.steps_n, dtype=_torch.float32, device="cpu"))
        else:
            run_throughput(args, send, receive)
        return 0

    if not (Path(args.data) / "train.tsv").exists():
        raise SystemExit(f"no corpus at {args.data} (train.tsv missing); generate it with "
                         f"`python examples/make_speech_corpus.py data/speech_corpus`")
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    results, matmul = [], []

    def time_the_matmul(label):
        if args.configs and not args.no_matmul:
            matmul.append(run_matmul(args, Path(tmp), label))
            print(f"[{time.perf_counter() - t_start:6.1f}s] matmul {args.matmul_n}x{args.matmul_n} fp32 ({label}): "
                  f"{matmul[-1]['best_flops_per_s'] / 1e9:.1f} GFLOP/s", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="d2v_bench_") as tmp:
        for group in groups_of(args.configs):
            time_the_matmul(f"before {size_of(group[0])}")
            results += run_group(group, args, Path(tmp), t_start)
        time_the_matmul("end")
        breakdown = None
        if args.breakdown and args.breakdown.lower() != "none":
            print(f"[{time.perf_counter() - t_start:6.1f}s] profiling the parts of {args.breakdown} "
                  f"({args.breakdown_steps} updates)", file=sys.stderr, flush=True)
            breakdown = run_breakdown_process(args.breakdown, args, Path(tmp))

    peak = max((x["best_flops_per_s"] for x in matmul), default=None)
    for r in results:
        r["mfu"] = r["achieved_flops_per_s"] / peak if peak and "achieved_flops_per_s" in r else None
        r["best_mfu"] = r["best_achieved_flops_per_s"] / peak if peak and "achieved_flops_per_s" in r else None

    import fairseq
    report = {
        "meta": {
            "cpu": cpu_model(), "threads": args.threads, "cores": os.cpu_count(),
            "torch": torch.__version__, "fairseq": getattr(fairseq, "__version__", "?"),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "data": os.path.relpath(args.data, REPO) if str(args.data).startswith(str(REPO)) else str(args.data),
            "command": "python benchmarks/pretraining_throughput.py " + " ".join(
                sys.argv[1:] if argv is None else argv),
            "runtime_s": time.perf_counter() - t_start,
            "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
        },
        "results": results,
        "matmul": matmul,
        "matmul_peak_flops_per_s": peak,
        "ratios": ratios(results, args.baseline),
        "breakdown": breakdown,
    }
    markdown = to_markdown(report)
    print(markdown)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".json":
            out.write_text(json.dumps(report, indent=1))
        else:
            out.write_text(markdown)
            out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
