#!/usr/bin/env python3
"""GPU pretraining throughput of data2vec 2.0 (base audio, bf16): updates/s, audio-hours per
hour, model FLOPs utilisation, peak memory -- on synthetic 16 kHz audio, in a few minutes.

What runs (everything fairseq builds for ``fairseq-hydra-train``, minus the Trainer loop):

* the config's ``task`` / ``model`` / ``criterion`` / ``optimizer`` sections (default
  ``config/pretraining/base_audio.yaml``) composed and built exactly as in
  the CPU benchmark (``throughput/step.py``: ``setup_task`` -> ``build_model`` -> ``build_criterion`` ->
  ``build_optimizer``), the model moved to the device;
* a synthetic corpus, generated with a fixed seed into a temporary folder: utterances of
  ``--utterance-seconds`` (default: the yaml's ``max_tokens`` split into the fewest utterances
  no longer than its ``max_sample_size``, i.e. 4 x 15.6 s = 1,000,000 samples for base_audio),
  each a mixture of amplitude-modulated sines plus noise, read back through the task's own
  dataset, fairseq's batch iterator (``max_tokens`` batching) and the collater (crops, M masks
  per sample). ``--pool`` batches are collated up front (the data loader's workers do that in
  parallel in real training) and cycled;
* one update = host-to-device copy, ``model.set_num_updates(i)`` (the EMA teacher step), the
  criterion's forward under ``torch.autocast(bf16)`` (fp32 master weights; the teacher is kept
  in fp32 by the model), backward, ``multiply_grads(1 / sample_size)``, the grad norm and its
  finiteness check (one host sync, as fairseq's Trainer), fairseq's Adam step. fairseq's
  ``task.train_step`` is not called because it wraps the forward in
  ``torch.cuda.amp.autocast(enabled=False)`` unless the optimizer is fairseq's AMP one;
  the calls above are its body.

Reported: s/update (mean, median), updates/s, audio-hours per hour of wall time (every sample
counts once, not M times), model FLOPs per update (``FlopCounterMode`` on one untimed update:
matmuls, convolutions, attention; forward + backward), achieved FLOP/s, MFU against the card's
dense bf16 peak (table keyed by ``torch.cuda.get_device_name()``, see ``flops.py``) and against
a bf16 matmul timed in the same run, peak memory (``torch.cuda.max_memory_allocated``; on CPU
the process's peak RSS).

On one H100/H200 (defaults: 5 warm-up + 40 timed updates of base_audio, timed loop capped at
``--max-seconds`` 240)::

    python benchmarks/gpu_throughput.py --out benchmarks/gpu_results.json

On CPU with the tiny config (what the test runs)::

    OMP_NUM_THREADS=1 python benchmarks/gpu_throughput.py --device cpu --config tiny_audio --threads 1
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from flops import bf16_peak_tflops, count_flops, time_matmul  # noqa: E402
from throughput.configs import config_label, load_yaml  # noqa: E402
from throughput.resources import cpu_model  # noqa: E402
from throughput.step import build  # noqa: E402


def synthetic_corpus(folder: Path, count: int, samples: int, sample_rate: int, seed: int) -> Path:
    """``count`` utterances of ``samples`` samples: 3-6 amplitude-modulated sines (80 Hz - 4 kHz)
    plus white noise, 16-bit PCM, and a fairseq manifest (train.tsv) listing them."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    wav_dir = folder / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    t = np.arange(samples) / sample_rate
    lines = [str(wav_dir)]
    for i in range(count):
        wav = 0.05 * rng.standard_normal(samples)
        for _ in range(int(rng.integers(3, 7))):
            freq, am = rng.uniform(80, 4000), rng.uniform(0.5, 4.0)
            envelope = 0.5 * (1 + np.sin(2 * np.pi * am * t + rng.uniform(0, 2 * np.pi)))
            wav += rng.uniform(0.1, 0.5) * envelope * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
        wav = 0.5 * wav / np.abs(wav).max()
        sf.write(wav_dir / f"syn{i:04d}.wav", wav.astype(np.float32), sample_rate, subtype="PCM_16")
        lines.append(f"syn{i:04d}.wav\t{samples}")
    (folder / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


def to_device(sample, device):
    import torch

    if torch.is_tensor(sample):
        return sample.to(device, non_blocking=True)
    if isinstance(sample, dict):
        return {k: to_device(v, device) for k, v in sample.items()}
    if isinstance(sample, (list, tuple)):
        return type(sample)(to_device(v, device) for v in sample)
    return sample


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="base_audio",
                   help="pretraining config (name under config/pretraining or benchmarks/configs, or a yaml; "
                        "overrides after '+'); default %(default)s")
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu, or auto (cuda if available)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="bf16 autocast or fp32 (auto: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="samples per batch (default: the yaml's dataset.max_tokens)")
    p.add_argument("--utterance-seconds", type=float, default=None,
                   help="length of every synthetic utterance (default: max_tokens split into the fewest "
                        "utterances no longer than the yaml's max_sample_size)")
    p.add_argument("--steps", type=int, default=None, help="timed updates (default 40 on cuda, 3 on cpu)")
    p.add_argument("--warmup", type=int, default=None, help="untimed updates first (default 5 on cuda, 1 on cpu)")
    p.add_argument("--max-seconds", type=float, default=240,
                   help="stop the timed loop after this many seconds (keeping >= 2 updates); default %(default)s")
    p.add_argument("--matmul-n", type=int, default=None,
                   help="size of the timed reference matmul (default 8192 on cuda, 2048 on cpu)")
    p.add_argument("--pool", type=int, default=4, help="distinct batches collated up front and cycled")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    t_start = time.perf_counter()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible (use --device cpu --config tiny_audio)")
    precision = args.precision if args.precision != "auto" else ("bf16" if cuda else "fp32")
    steps = args.steps if args.steps is not None else (40 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if steps < 2:
        raise SystemExit("--steps must be at least 2")

    yaml = load_yaml(args.config)
    sample_rate = int(yaml.task.get("sample_rate", 16000))
    max_tokens = int(args.max_tokens or yaml.dataset.max_tokens)
    max_sample = int(yaml.task.get("max_sample_size") or max_tokens)
    if args.utterance_seconds:
        samples = int(round(args.utterance_seconds * sample_rate))
    else:
        samples = max_tokens // math.ceil(max_tokens / min(max_sample, max_tokens))
    samples = min(samples, max_sample)
    per_batch = max_tokens // samples
    if per_batch < 1:
        raise SystemExit(f"--utterance-seconds gives {samples} samples, more than --max-tokens {max_tokens}")

    with tempfile.TemporaryDirectory(prefix="d2v_gpu_bench_") as tmp:
        corpus = synthetic_corpus(Path(tmp), per_batch * args.pool, samples, sample_rate, args.seed)
        task, model, criterion, optimizer, stream, info = build(
            args.config, str(corpus), max_tokens, torch.get_num_threads(), args.seed)
        pool = [next(stream) for _ in range(args.pool)]
    if cuda:
        pool = [to_device(s, "cpu") for s in pool]
        for s in pool:  # pinned host memory, as fairseq's data loader gives with pin_memory
            s["net_input"] = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in s["net_input"].items()}
    model.to(device)
    criterion.to(device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def update(i: int, sample) -> float:
        sample = to_device(sample, device)
        model.train()
        criterion.train()
        optimizer.zero_grad()
        model.set_num_updates(i)                       # EMA teacher step (task.train_step does this)
        with autocast:
            loss, sample_size, _ = criterion(model, sample)
        optimizer.backward(loss)
        optimizer.multiply_grads(1.0 / float(sample_size or 1.0))
        grad_norm = optimizer.clip_grad_norm(0.0)
        if not torch.isfinite(grad_norm):
            raise FloatingPointError(f"non-finite gradient norm at update {i}")
        optimizer.step()
        return float(loss.detach())

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    i = 0
    for _ in range(warmup):
        losses.append(update(i, pool[i % len(pool)]))
        i += 1
    # Model FLOPs of one real update (untimed): forward + backward under the counter.
    sample = pool[i % len(pool)]
    flop_loss, flops, flops_by_op = count_flops(lambda: update(i, sample))
    losses.append(flop_loss)
    flops_audio_s = sample["net_input"]["source"].numel() / sample_rate
    i += 1
    sync()
    times, audio = [], []
    t_loop = time.perf_counter()
    for k in range(steps):
        sample = pool[i % len(pool)]
        t0 = time.perf_counter()
        losses.append(update(i, sample))
        sync()
        times.append(time.perf_counter() - t0)
        audio.append(sample["net_input"]["source"].numel() / sample_rate)
        i += 1
        if k >= 1 and time.perf_counter() - t_loop > args.max_seconds:
            break
    if cuda:
        peak_mem = torch.cuda.max_memory_allocated(device)
        peak_kind = "torch.cuda.max_memory_allocated"
        device_name = torch.cuda.get_device_name(device)
        matmul = time_matmul(args.matmul_n or 8192, reps=20, dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
                             device=str(device), warmup=3)
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_kind = "peak RSS of the process (ru_maxrss)"
        device_name = f"CPU: {cpu_model()}, {torch.get_num_threads()} thread(s)"
        matmul = time_matmul(args.matmul_n or 2048, reps=5, dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
                             device="cpu")

    total = sum(times)
    flops_per_update = flops / flops_audio_s * sum(audio) / len(audio)   # scaled to the timed batches
    achieved = flops_per_update * len(times) / total
    peak_tflops, peak_key = bf16_peak_tflops(device_name) if cuda and precision == "bf16" else (None, None)
    result: Dict = {
        "config": config_label(args.config), "device": str(device), "device_name": device_name,
        "precision": precision, "params_student": info["params_student"], "clone_batch": info["clone_batch"],
        "family": info["family"], "max_tokens": max_tokens, "utterance_samples": samples,
        "utterances_per_update": per_batch, "audio_s_per_update": sum(audio) / len(audio),
        "warmup": warmup, "steps": len(times), "seconds": times,
        "sec_per_update": total / len(times), "median_sec_per_update": statistics.median(times),
        "updates_per_s": len(times) / total,
        "audio_s_per_s": sum(audio) / total,
        "audio_hours_per_hour": (sum(audio) / 3600) / (total / 3600),
        "flops_counted_update": flops, "flops_by_op": flops_by_op,
        "flops_per_update": flops_per_update, "achieved_flops_per_s": achieved,
        "peak_bf16_tflops_table": peak_tflops, "peak_table_key": peak_key,
        "mfu_vs_peak": achieved / (peak_tflops * 1e12) if peak_tflops else None,
        "matmul": matmul, "mfu_vs_matmul": achieved / matmul["best_flops_per_s"],
        "peak_memory_bytes": int(peak_mem), "peak_memory_gib": peak_mem / 2 ** 30, "peak_memory_kind": peak_kind,
        "losses": losses, "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__module__ + "."
        + type(getattr(optimizer, "optimizer", optimizer)).__name__,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "runtime_s": time.perf_counter() - t_start,
        "command": "python benchmarks/gpu_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"non-finite loss in the benchmark: {losses}")

    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"
    unit, scale = ("TFLOP", 1e12) if cuda else ("GFLOP", 1e9)
    print(f"{result['device_name']} ({device}), {config_label(args.config)}, {precision}, "
          f"{per_batch} x {samples / sample_rate:.2f} s per update, M = {info['clone_batch']}; "
          f"{len(times)} timed updates after {warmup + 1} untimed; runtime {result['runtime_s']:.0f} s")
    print("| card | config | precision | audio s / update | s / update: mean (median) | updates/s "
          f"| audio-h / h | {unit} / update | achieved {unit}/s | MFU vs bf16 peak (table) | MFU vs measured matmul "
          "| peak memory GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {device_name} | {config_label(args.config)} | {precision} | {result['audio_s_per_update']:.1f} "
          f"| {result['sec_per_update']:.3f} ({result['median_sec_per_update']:.3f}) | {result['updates_per_s']:.2f} "
          f"| {result['audio_hours_per_hour']:.0f} | {flops_per_update / scale:.3f} | {achieved / scale:.2f} "
          f"| {pct(result['mfu_vs_peak'])}{f' of {peak_tflops:.0f}' if peak_tflops else ''} "
          f"| {pct(result['mfu_vs_matmul'])} of {matmul['best_flops_per_s'] / scale:.1f} "
          f"| {result['peak_memory_gib']:.2f} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
