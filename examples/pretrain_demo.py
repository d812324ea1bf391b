"""Run a short data2vec 2.0 pretraining through the real ``fairseq-hydra-train`` CLI.

Shows a live one-line progress display while fairseq trains, keeps fairseq's full log
in ``<save_dir>/train.log``, and ends with a summary: updates done, loss first -> last,
the last target_var, and where the checkpoint is.

    python examples/pretrain_demo.py --data data/speech_corpus
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def hydra_command(config: str, data: Path, save_dir: Path, max_update: int, extra) -> list:
    cli = Path(sys.executable).with_name("fairseq-hydra-train")
    return [str(cli), "--config-dir", str(REPO / "config" / "pretraining"), "--config-name", config,
            f"task.data={data}", f"checkpoint.save_dir={save_dir}",
            f"optimization.max_update={max_update}", f"common.user_dir={REPO / 'd2v_plugin'}",
            "common.log_format=json", "common.log_interval=10", *extra]


def parse_row(line: str):
    """fairseq's json log rows look like ``[...][train_inner][INFO] - {"loss": ...}``."""
    start = line.find("{")
    if start < 0 or "[train_inner]" not in line:
        return None
    try:
        return json.loads(line[start:])
    except json.JSONDecodeError:
        return None


def progress_line(row: dict, max_update: int, started: float) -> str:
    done = int(row.get("num_updates", 0))
    width = 30
    filled = int(width * done / max(max_update, 1))
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] update {done}/{max_update} "
            f"loss {float(row['loss']):.3f} target_var {float(row.get('target_var', 'nan')):.3f} "
            f"pred_var {float(row.get('pred_var', 'nan')):.3f} {time.time() - started:.0f}s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "speech_corpus")
    parser.add_argument("--config", default="tiny_audio")
    parser.add_argument("--save-dir", type=Path, default=REPO / "checkpoints" / "tiny_audio")
    parser.add_argument("--max-update", type=int, default=300)
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides, e.g. model.depth=2")
    args = parser.parse_args(argv)

    args.save_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.save_dir / "train.log"
    cmd = hydra_command(args.config, args.data.resolve(), args.save_dir.resolve(), args.max_update, args.overrides)
    print("running:", " ".join(cmd), flush=True)
    rows, started = [], time.time()
    with open(log_path, "w") as log, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=args.save_dir) as proc:
        for line in proc.stdout:
            log.write(line)
            row = parse_row(line)
            if row is not None:
                rows.append(row)
                print(progress_line(row, args.max_update, started), end="", flush=True)
    print()
    if proc.returncode != 0:
        print(f"fairseq-hydra-train failed (exit {proc.returncode}); last lines of {log_path}:")
        print("".join(open(log_path).readlines()[-25:]))
        return proc.returncode
    checkpoint = args.save_dir / "checkpoint_last.pt"
    if not rows or not checkpoint.exists():
        print(f"training ended without progress rows or checkpoint; see {log_path}")
        return 1
    first, last = rows[0], rows[-1]
    print("summary")
    print(f"  updates done : {last['num_updates']}")
    print(f"  loss         : {float(first['loss']):.3f} (update {first['num_updates']}) -> "
          f"{float(last['loss']):.3f} (update {last['num_updates']})")
    print(f"  target_var   : {float(last['target_var']):.3f} (collapse guard: < 0.1)")
    print(f"  checkpoint   : {checkpoint}")
    print(f"  full log     : {log_path}")
    print(f"  wall time    : {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
