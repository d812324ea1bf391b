#!/usr/bin/env python3
"""Time to quality: phoneme-recognition quality per unit of pretraining compute, for data2vec 2.0,
data2vec 2.0 with one mask per sample (M = 1), the data2vec 1.0 recipe and fairseq's own
wav2vec 2.0, at one encoder size on the same unlabelled audio.

The paper's efficiency claim (data2vec 2.0 reaches wav2vec 2.0's accuracy with ~10x less
pretraining time) is a convergence claim; per-update speed (benchmarks/) does not answer it.
Here every method pretrains for the same budget of *process CPU seconds* at a fixed thread
count (robust to other jobs on the machine, unlike wall time, which is recorded next to it),
checkpoints are saved densely, and the checkpoints closest to fixed marks of compute are scored
with ``d2v-speech-probe`` (frozen features: phoneme error rate on voices no pretraining or probe
training saw, speaker-ID accuracy). Random init of each architecture is the floor.

Per method the pipeline is: calibrate (a short run measures CPU seconds per update) -> pretrain
(``max_update`` = budget / calibrated cost, so the learning-rate and EMA schedules end at the
budget; the CPU time of every update is read from ``/proc`` while fairseq logs it) -> probe
each mark. Every stage writes its result next to the run and is skipped when re-run, so an
interrupted curve resumes (an interrupted pretraining resumes from its checkpoint_last.pt).

    python examples/efficiency_curve.py --data data/speech_corpus --work-dir runs/efficiency \\
        --budget-cpu-minutes 30 --jobs 2 --out-dir docs/efficiency

``--jobs 2`` runs two methods at a time with ``--threads 1`` each (on 2 cores; the CPU seconds
of a process are what is compared, so parallel runs stay comparable). Output: ``curve.png``
(PER vs CPU-hours, one line per method, random init dashed), ``curve.md`` (the table, the
headline and the command) and ``curve.json`` in ``--out-dir``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PRINT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Method:
    """A pretraining recipe: a yaml (``config_dir`` relative to the repository) plus overrides."""

    name: str
    config_dir: str
    config: str
    overrides: tuple = ()
    ema: bool = True  # data2vec: anneal the EMA decay over the whole (budgeted) run

    def schedule_overrides(self, max_update: int) -> List[str]:
        """Make the learning-rate schedule, and the EMA (data2vec) or Gumbel temperature
        (wav2vec 2.0) schedule, end at the budget, as the yamls do at theirs. A schedule key the
        method sets itself (e.g. ``lr_scheduler.warmup_updates=100``) keeps the method's value;
        ``max_update`` always comes from the budget."""
        warmup = max(1, max_update // 10)  # every tiny yaml warms up for 10 % of its updates
        out = [f"lr_scheduler.warmup_updates={warmup}"]
        if self.ema:
            out.append(f"model.ema_anneal_end_step={max_update}")
        else:
            out.append(f"++model.latent_temp={gumbel_temperature(max_update)}")
        own = {override_key(o) for o in self.overrides}
        return [f"optimization.max_update={max_update}"] + [o for o in out if override_key(o) not in own]


def override_key(override: str) -> str:
    """``++model.x=1`` -> ``model.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def gumbel_temperature(max_update: int, start: float = 2.0, end: float = 0.5) -> str:
    """wav2vec 2.0's quantizer temperature, decayed per update from 2 to its floor 0.5 at 70 %
    of the run, as the base recipe's (2, 0.5, 0.999995) does over its 400k updates. Unscaled, a
    run of a few thousand updates keeps the temperature near 2 all along, and the codebook
    collapses to a handful of codes (prob_perplexity 3-12 of 640 measured at tiny size)."""
    decay = (end / start) ** (1.0 / (0.7 * max_update))
    return f"[{start},{end},{decay:.9f}]"


METHODS: Dict[str, Method] = {m.name: m for m in (
    Method("d2v2", "config/pretraining", "tiny_audio"),
    Method("d2v2_m1", "config/pretraining", "tiny_audio", ("model.clone_batch=1",)),
    Method("d2v1", "config/pretraining", "tiny_audio_d2v1"),
    Method("w2v2", "benchmarks/configs", "tiny_audio_w2v2", ema=False),
)}
LABELS = {"d2v2": "data2vec 2.0 (M = 4)", "d2v2_m1": "data2vec 2.0, M = 1",
          "d2v1": "data2vec 1.0 recipe", "w2v2": "wav2vec 2.0 (fairseq)"}


def parse_method(spec: str) -> Method:
    """``NAME=CONFIG_DIR:CONFIG[,override,...]``, e.g. ``small=config/pretraining:small_audio``."""
    name, _, rest = spec.partition("=")
    if name in METHODS and not rest:
        return METHODS[name]
    where, *overrides = rest.split(",")
    config_dir, _, config = where.rpartition(":")
    if not (name and config_dir and config):
        raise argparse.ArgumentTypeError(
            f"{spec!r}: expected one of {sorted(METHODS)} or NAME=CONFIG_DIR:CONFIG[,override,...]")
    return Method(name, config_dir, config, tuple(overrides), ema=not config.endswith("w2v2"))


def say(method: str, message: str) -> None:
    with PRINT_LOCK:
        print(f"[{time.strftime('%H:%M:%S')}] {method:8s} {message}", flush=True)


def read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file; a resumed curve trusts what exists


# --------------------------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------------------------
def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants, from /proc (Linux)."""
    parents: Dict[int, int] = {}
    times: Dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        parents[int(entry)] = int(rest[1])
        times[int(entry)] = (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
    total, frontier = 0.0, [pid]
    while frontier:
        p = frontier.pop()
        total += times.get(p, 0.0)
        frontier += [c for c, parent in parents.items() if parent == p]
    return total


def train_with_timeline(cmd: List[str], env: dict, run_dir: Path, timeline_path: Path,
                        method: str, max_update: int) -> None:
    """Run fairseq and append ``{"update", "cpu_s", "wall_s"}`` for every logged update.

    fairseq logs each update (``log_interval=1``) right after its optimizer step; the CPU time of
    the training process read at that line, minus what it had spent when training began
    (imports, model and data set-up, the same for a run of any length), is the compute spent up
    to that update. A resumed run continues the cumulative clocks from the update its checkpoint
    holds.
    """
    previous = [json.loads(l) for l in timeline_path.read_text().splitlines()] if timeline_path.exists() else []
    by_update = {row["update"]: row for row in previous}
    log = open(run_dir / "train.log", "a")
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=run_dir, env=env)
    offset = None
    startup_cpu, startup_wall = 0.0, 0.0  # imports, model and data set-up: not training compute
    last_print = 0.0
    with open(timeline_path, "a") as timeline:
        for line in proc.stdout:
            log.write(line)
            if offset is None and "begin training epoch" in line:
                startup_cpu, startup_wall = process_tree_cpu_seconds(proc.pid), time.time() - started
            start = line.find("{")
            if "[train_inner]" not in line or start < 0:
                continue
            cpu = process_tree_cpu_seconds(proc.pid) - startup_cpu
            update = int(json.loads(line[start:])["num_updates"])
            if offset is None:  # first row of this process: resumed after update - 1
                base = by_update.get(update - 1, {"cpu_s": 0.0, "wall_s": 0.0})
                offset = (base["cpu_s"], base["wall_s"])
            row = {"update": update, "cpu_s": round(offset[0] + cpu, 3),
                   "wall_s": round(offset[1] + time.time() - started - startup_wall, 3)}
            timeline.write(json.dumps(row) + "\n")
            timeline.flush()
            if time.time() - last_print > 30:
                last_print = time.time()
                say(method, f"pretraining: update {update}/{max_update}, {row['cpu_s'] / 60:.1f} CPU-min")
    log.close()
    if proc.wait() != 0:
        raise RuntimeError(f"{method}: {' '.join(map(shlex.quote, cmd))} failed; see {run_dir / 'train.log'}")


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------
@dataclass
class Settings:
    data: Path
    work_dir: Path
    budget_cpu_s: float
    marks: List[float]
    threads: int
    train_subset: str
    calibration_updates: int
    dense_checkpoints: int
    probe_args: List[str] = field(default_factory=list)


def hydra_cmd(method: Method, settings: Settings, save_dir: Path, extra: Sequence[str]) -> List[str]:
    return [str(BIN / "fairseq-hydra-train"), "--config-dir", str(REPO / method.config_dir),
            "--config-name", method.config, f"task.data={settings.data}",
            f"common.user_dir={REPO / 'd2v_plugin'}", f"checkpoint.save_dir={save_dir}",
            f"dataset.train_subset={settings.train_subset}", "dataset.disable_validation=true",
            "dataset.num_workers=0",  # data loading in the measured process, for every method alike
            "common.log_format=json", "common.log_interval=1", *method.overrides, *extra]


def thread_env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def calibrate(method: Method, settings: Settings) -> float:
    """CPU seconds per update, from a short run (after its first few updates: start-up excluded)."""
    run_dir = settings.work_dir / method.name / "calibration"
    result = read_json(run_dir / "calibration.json")
    if result:
        return result["cpu_s_per_update"]
    run_dir.mkdir(parents=True, exist_ok=True)
    n = settings.calibration_updates
    timeline = run_dir / "timeline.jsonl"
    timeline.unlink(missing_ok=True)
    say(method.name, f"calibrating: {n} updates")
    cmd = hydra_cmd(method, settings, run_dir / "ckpt",
                    method.schedule_overrides(n) + ["checkpoint.no_save=true"])
    train_with_timeline(cmd, thread_env(settings.threads), run_dir, timeline, method.name, n)
    rows = [json.loads(l) for l in timeline.read_text().splitlines()]
    skip = min(len(rows) - 2, max(1, n // 4))
    cost = (rows[-1]["cpu_s"] - rows[skip]["cpu_s"]) / (rows[-1]["update"] - rows[skip]["update"])
    write_json(run_dir / "calibration.json", {"cpu_s_per_update": cost, "updates": n,
                                              "threads": settings.threads})
    say(method.name, f"calibrated: {cost:.3f} CPU-s per update")
    return cost


def pretrain(method: Method, settings: Settings, cost: float) -> List[dict]:
    """Pretrain for the budget; return the saved checkpoints with their cumulative compute."""
    run_dir = settings.work_dir / method.name / "pretrain"
    done = read_json(run_dir / "checkpoints.json")
    if done:
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    max_update = max(settings.dense_checkpoints, round(settings.budget_cpu_s / cost))
    every = max(1, max_update // settings.dense_checkpoints)
    write_json(run_dir / "plan.json", {"max_update": max_update, "save_every": every,
                                       "cpu_s_per_update": cost, "budget_cpu_s": settings.budget_cpu_s})
    say(method.name, f"pretraining: {max_update} updates, a checkpoint every {every}")
    save_dir = run_dir / "ckpt"
    cmd = hydra_cmd(method, settings, save_dir, method.schedule_overrides(max_update) + [
        f"checkpoint.save_interval_updates={every}", "checkpoint.keep_interval_updates=-1",
        "checkpoint.no_epoch_checkpoints=true"])
    timeline_path = run_dir / "timeline.jsonl"
    train_with_timeline(cmd, thread_env(settings.threads), run_dir, timeline_path, method.name, max_update)
    clock = {}
    for line in timeline_path.read_text().splitlines():
        row = json.loads(line)
        clock[row["update"]] = row  # a resumed run re-logs updates after its checkpoint: keep the last
    checkpoints = []
    for path in save_dir.glob("checkpoint_*_*.pt"):
        update = int(path.stem.rsplit("_", 1)[1])
        if update in clock:
            checkpoints.append({"path": str(path), "update": update, "cpu_s": clock[update]["cpu_s"],
                                "wall_s": clock[update]["wall_s"]})
    checkpoints.sort(key=lambda c: c["update"])
    for c in checkpoints:  # the compute beside each checkpoint, for anyone who picks one up later
        write_json(Path(c["path"]).with_suffix(".compute.json"),
                   {**c, "threads": settings.threads, "method": method.name})
    write_json(run_dir / "checkpoints.json", checkpoints)
    return checkpoints


def pick_marks(checkpoints: List[dict], settings: Settings) -> List[dict]:
    """For each mark (a fraction of the budget), the checkpoint whose compute is closest to it."""
    picked: Dict[int, dict] = {}
    for fraction in settings.marks:
        target = fraction * settings.budget_cpu_s
        best = min(checkpoints, key=lambda c: abs(c["cpu_s"] - target))
        picked.setdefault(best["update"], {**best, "mark": fraction})  # tiny budgets: marks may share one
    return sorted(picked.values(), key=lambda c: c["update"])


def probe(checkpoint: Path, out: Path, settings: Settings, method: str, random_init: bool = False) -> dict:
    result = read_json(out)
    if result:
        return result
    cmd = [str(BIN / "d2v-speech-probe"), str(checkpoint), "--data", str(settings.data),
           "--json", str(out), *(["--random-init"] if random_init else []), *settings.probe_args]
    say(method, f"probing {'random init of ' if random_init else ''}{checkpoint.name}")
    proc = subprocess.run(cmd, env=thread_env(settings.threads), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return read_json(out)


def probe_scores(doc: dict) -> dict:
    """The numbers the curve plots, from a ``d2v-speech-probe --json`` file: PER on the voices no
    pretraining or probe training heard (``test_unseen``; ``test`` for a corpus without held-out
    voices), PER on valid (seen voices), speaker-ID accuracy on test."""
    report = doc["results"][0]
    per = report["pr"]["per"]
    unseen = "test_unseen" if "test_unseen" in per else "test"
    return {"per_test": per[unseen]["mean"], "per_test_std": per[unseen]["std"], "per_split": unseen,
            "per_valid": per["valid"]["mean"], "sid_test": report["sid"]["accuracy"]["test"]["mean"]}


def run_method(method: Method, settings: Settings) -> dict:
    cost = calibrate(method, settings)
    checkpoints = pretrain(method, settings, cost)
    probes_dir = settings.work_dir / method.name / "probes"
    probes_dir.mkdir(parents=True, exist_ok=True)
    points = []
    for c in pick_marks(checkpoints, settings):
        report = probe(Path(c["path"]), probes_dir / f"update{c['update']}.json", settings, method.name)
        points.append({**c, **probe_scores(report)})
    floor = probe(Path(checkpoints[-1]["path"]), probes_dir / "random_init.json", settings, method.name,
                  random_init=True)
    say(method.name, "done")
    return {"method": method.name, "config": f"{method.config_dir}/{method.config}.yaml",
            "overrides": list(method.overrides), "cpu_s_per_update": cost, "points": points,
            "random_init": probe_scores(floor)}


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def compute_to_reach(points: List[dict], per: float) -> Optional[float]:
    """CPU seconds at which a method's PER curve first reaches ``per`` (linear interpolation
    between neighbouring marks; None if it never does within the budget)."""
    previous = None
    for p in points:
        if p["per_test"] <= per:
            if previous is None or previous["per_test"] == p["per_test"]:
                return p["cpu_s"]
            t = (previous["per_test"] - per) / (previous["per_test"] - p["per_test"])
            return previous["cpu_s"] + t * (p["cpu_s"] - previous["cpu_s"])
        previous = p
    return None


def compute_ratios(results: List[dict], per: float, ref_cost: float) -> Dict[str, dict]:
    """Per method: CPU seconds to reach ``per``, and their ratio to the reference's ``ref_cost``."""
    out = {}
    for r in results:
        cost = compute_to_reach(r["points"], per)
        out[r["method"]] = {"cpu_s": cost, "ratio": None if cost is None else cost / ref_cost}
    return out


def headline(results: List[dict], reference: str = "w2v2") -> dict:
    """The paper's measure: compute each method needs to reach the best PER the reference
    reaches within the budget, as a ratio to the reference's; and the same for the PER of each
    of the reference's marks (the curve's shape when a method never reaches the best)."""
    ref = next((r for r in results if r["method"] == reference), None)
    if ref is None:
        return {}
    best = min(ref["points"], key=lambda p: p["per_test"])
    ref_cost = compute_to_reach(ref["points"], best["per_test"])
    marks = [{"per": p["per_test"], "reference_cpu_s": compute_to_reach(ref["points"], p["per_test"])}
             for p in ref["points"]]
    for m in marks:
        m["methods"] = compute_ratios(results, m["per"], m["reference_cpu_s"])
    return {"reference": reference, "target_per": best["per_test"], "reference_cpu_s": ref_cost,
            "methods": compute_ratios(results, best["per_test"], ref_cost), "at_reference_marks": marks}


def label_of(result: dict) -> str:
    """The legend of a built-in method, or ``name (config + overrides)`` of a custom one (a
    custom ``d2v2=...:small_audio`` is not the built-in d2v2)."""
    name = result["method"]
    builtin = METHODS.get(name)
    if builtin and result["config"] == f"{builtin.config_dir}/{builtin.config}.yaml" \
            and tuple(result["overrides"]) == builtin.overrides:
        return LABELS[name]
    return f"{name} ({' '.join([Path(result['config']).stem, *result['overrides']])})"


def plot(results: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = len(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for i, r in enumerate(results):
        xs = [p["cpu_s"] / 3600 for p in r["points"]]
        # past the colour cycle, a new marker keeps two methods of one colour apart
        line, = ax.plot(xs, [p["per_test"] for p in r["points"]], marker="osv^D"[(i // colors) % 5],
                        label=label_of(r))
        ax.axhline(r["random_init"]["per_test"], color=line.get_color(), linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("pretraining compute (CPU-hours, 1 thread)")
    ax.set_ylabel("phoneme error rate, unseen voices (%)")
    ax.set_title("Time to quality (dashed: random init of each architecture)")
    ax.grid(True, which="both", alpha=0.3)
    # below the axes: custom methods' labels (config + overrides) are long
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize="small", frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def markdown(results: List[dict], head: dict, settings: Settings, command: str) -> str:
    lines = [f"Measured {time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core CPU, {settings.threads} thread(s) "
             f"per run, budget {settings.budget_cpu_s / 60:.0f} CPU-minutes per method, pretraining on "
             f"`{settings.train_subset}`.", "", "```bash", command, "```", "",
             "| method | update | CPU-min | wall-min | PER test (unseen voices) | PER valid | speaker ID test |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for p in r["points"]:
            lines.append(f"| {r['method']} | {p['update']} | {p['cpu_s'] / 60:.1f} | {p['wall_s'] / 60:.1f} | "
                         f"{p['per_test']:.1f} ± {p['per_test_std']:.1f} | {p['per_valid']:.1f} | "
                         f"{p['sid_test']:.1f} |")
        f = r["random_init"]
        lines.append(f"| {r['method']} random init | 0 | 0 | 0 | {f['per_test']:.1f} | {f['per_valid']:.1f} | "
                     f"{f['sid_test']:.1f} |")
    if head:
        lines += ["", f"Headline: compute to reach wav2vec 2.0's best PER within the budget "
                      f"({head['target_per']:.1f} %), as a ratio to wav2vec 2.0's:", ""]
        for name, h in head["methods"].items():
            reached = "not reached within the budget" if h["cpu_s"] is None else \
                f"{h['cpu_s'] / 60:.1f} CPU-min, ratio {h['ratio']:.2f}"
            lines.append(f"- {name}: {reached}")
        lines += ["", "The same at the PER of each of wav2vec 2.0's marks (CPU-min to reach it, ratio):", "",
                  "| PER | " + " | ".join(head["methods"]) + " |", "|---" * (len(head["methods"]) + 1) + "|"]
        for m in head["at_reference_marks"]:
            cells = ["not reached" if h["cpu_s"] is None else f"{h['cpu_s'] / 60:.1f} ({h['ratio']:.2f})"
                     for h in m["methods"].values()]
            lines.append(f"| {m['per']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="speech corpus (make_speech_corpus.py)")
    parser.add_argument("--work-dir", type=Path, required=True, help="runs, checkpoints and probe reports")
    parser.add_argument("--out-dir", type=Path, required=True, help="where curve.png / .md / .json go")
    parser.add_argument("--methods", type=parse_method, nargs="+", default=list(METHODS.values()),
                        help=f"built-in {sorted(METHODS)} or NAME=CONFIG_DIR:CONFIG[,override,...]")
    parser.add_argument("--budget-cpu-minutes", type=float, default=30.0, help="per method")
    parser.add_argument("--marks", type=float, nargs="+", default=[1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0],
                        help="fractions of the budget at which checkpoints are probed")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads of every run and probe")
    parser.add_argument("--jobs", type=int, default=1, help="methods run at the same time")
    parser.add_argument("--train-subset", default="unlabelled",
                        help="the corpus split pretraining reads (make_speech_corpus.py --unlabelled-hours)")
    parser.add_argument("--calibration-updates", type=int, default=30)
    parser.add_argument("--dense-checkpoints", type=int, default=32, help="checkpoints saved per run")
    parser.add_argument("--probe-seeds", type=int, nargs="+", default=[1, 2],
                        help="d2v-speech-probe head seeds (mean and spread)")
    parser.add_argument("--probe-arg", action="append", default=[],
                        help="extra d2v-speech-probe argument (repeat), e.g. --probe-arg=--pr-steps=400")
    args = parser.parse_args(argv)
    settings = Settings(args.data.resolve(), args.work_dir.resolve(), args.budget_cpu_minutes * 60,
                        sorted(args.marks), args.threads, args.train_subset, args.calibration_updates,
                        args.dense_checkpoints,
                        ["--seeds", *map(str, args.probe_seeds), *args.probe_arg])
    if not (settings.data / f"{settings.train_subset}.tsv").is_file():
        raise SystemExit(f"{settings.data / (settings.train_subset + '.tsv')} not found: build it with "
                         f"examples/make_speech_corpus.py --unlabelled-hours H, or pass --train-subset train")
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda m: run_method(m, settings), args.methods))
    head = headline(results)
    command = "python examples/efficiency_curve.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    write_json(args.out_dir / "curve.json", {"results": results, "headline": head, "command": command,
                                            "budget_cpu_s": settings.budget_cpu_s, "threads": settings.threads})
    (args.out_dir / "curve.md").write_text(markdown(results, head, settings, command))
    plot(results, args.out_dir / "curve.png")
    print((args.out_dir / "curve.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
