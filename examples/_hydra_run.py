"""Run ``fairseq-hydra-train`` with one of the repository's configs, as a user would (shared
by the pretraining-benefit examples)."""
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HYDRA_TRAIN = str(Path(sys.executable).with_name("fairseq-hydra-train"))


def hydra(config_dir: str, config: str, overrides, log: Path) -> float:
    """Train with ``config/<config_dir>/<config>.yaml`` + overrides, output to ``log``; returns
    the wall time in seconds, exits with the log's path on failure."""
    cmd = [HYDRA_TRAIN, "--config-dir", str(REPO / "config" / config_dir), "--config-name", config,
           f"common.user_dir={REPO / 'd2v_plugin'}", *overrides]
    started = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed; see {log}")
    return time.time() - started
