"""Measurement: the configs of one size, each in its own process, take turns one timed update
each (same background load, and for data2vec the same batches); FLOPs are counted on the last
warm-up update; a dense matmul timed in a fresh process gives the MFU reference."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Dict, List

from .configs import config_label, per_config
from .resources import cpu_seconds, peak_rss_mib, rss_mib
from .stats import median
from .step import batch_stats, build, train_step
from .worker import Worker

MATMUL_N = 4096
MATMUL_REPS = 5


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


def time_matmul_in_worker(args) -> Dict:
    """In a ``--kind matmul`` worker: the dense fp32 matmul timing (n = --max-tokens, reps = --steps)."""
    import torch as _torch
    from flops import time_matmul

    _torch.set_num_threads(args.threads)
    return time_matmul(args.max_tokens_n, reps=args.steps_n, dtype=_torch.float32, device="cpu")
