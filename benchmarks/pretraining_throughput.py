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

This script is the command line and the driver; the work is in ``throughput/``: ``step.py``
(the training step), ``measure.py`` (interleaved timing, FLOPs, the matmul), ``breakdown.py``
(the profile), ``report.py`` (tables, ratios, MFU), ``worker.py`` (the subprocesses).

See benchmarks/README.md for the measured numbers and how to read them.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from throughput.breakdown import run_breakdown, run_breakdown_process
from throughput.configs import REPO, groups_of, size_of
from throughput.measure import MATMUL_N, run_group, run_matmul, run_throughput, time_matmul_in_worker
from throughput.report import add_mfu, ratios, to_markdown, write
from throughput.resources import cpu_model
from throughput.worker import worker_channel

DEFAULT_CONFIGS = [
    "tiny_audio", "tiny_audio+model.clone_batch=1", "tiny_audio_d2v1", "tiny_audio_w2v2",
    "base_audio", "base_audio+model.clone_batch=1", "base_audio_d2v1", "base_audio_w2v2",
]
# Reduced batches for 2 CPU cores: the base yamls ask for 1.0M samples (62.5 s of audio)
# per GPU, which takes minutes per update here. Keys match config names by prefix.
DEFAULT_MAX_TOKENS = "tiny=160000,base=160000"
DEFAULT_STEPS = "tiny=20,base=3"
DEFAULT_WARMUP = "tiny=3,base=1"


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

    if args.worker:  # one config (or the matmul) in a subprocess started by the driver below
        send, receive = worker_channel()
        args.steps_n, args.warmup_n, args.max_tokens_n = int(args.steps), int(args.warmup), int(args.max_tokens)
        if args.kind == "breakdown":
            send(run_breakdown(args))
        elif args.kind == "matmul":
            send(time_matmul_in_worker(args))
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

    peak = add_mfu(results, matmul)

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
        write(report, markdown, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
