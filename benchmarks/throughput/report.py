"""The report: per-config markdown table (times, audio-s/s, memory, FLOPs, MFU), the ratios
at equal encoder size (ratios of means, medians of paired rounds) and the breakdown tables."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from .stats import median


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


def add_mfu(results: List[Dict], matmul: List[Dict]) -> Optional[float]:
    """MFU of every config against the best matmul of the run; returns that peak FLOP/s."""
    peak = max((x["best_flops_per_s"] for x in matmul), default=None)
    for r in results:
        r["mfu"] = r["achieved_flops_per_s"] / peak if peak and "achieved_flops_per_s" in r else None
        r["best_mfu"] = r["best_achieved_flops_per_s"] / peak if peak and "achieved_flops_per_s" in r else None
    return peak


def write(report: Dict, markdown: str, out: Path) -> None:
    """``.json`` -> the report as JSON; anything else -> the markdown, plus the JSON next to it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(report, indent=1))
    else:
        out.write_text(markdown)
        out.with_suffix(".json").write_text(json.dumps(report, indent=1))
