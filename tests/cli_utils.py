"""Helpers to run the real fairseq CLI in tests and read its json log rows."""
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
HYDRA_TRAIN = str(Path(sys.executable).with_name("fairseq-hydra-train"))


def run_hydra_train(config_dir: str, config: str, overrides: List[str], cwd: Path,
                    timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [HYDRA_TRAIN, "--config-dir", str(REPO / "config" / config_dir), "--config-name", config,
           f"common.user_dir={REPO / 'd2v_plugin'}", *overrides]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    (Path(cwd) / f"{config}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def json_rows(output: str, tag: str = "train_inner") -> List[Dict]:
    rows = []
    for line in output.splitlines():
        start = line.find("{")
        if f"[{tag}]" in line and start >= 0:
            rows.append(json.loads(line[start:]))
    return rows


def run_python(code: str, cwd: Path = REPO, timeout: int = 300) -> str:
    """Run code in a fresh interpreter (fresh registries, fresh torch globals)."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"fresh process failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout
