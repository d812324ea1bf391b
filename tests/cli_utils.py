"""Helpers to run the real fairseq CLI in tests and read its json log rows."""
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parent.parent
HYDRA_TRAIN = str(Path(sys.executable).with_name("fairseq-hydra-train"))


def hydra_command(config_dir: str, config: str, overrides: List[str]) -> List[str]:
    return [HYDRA_TRAIN, "--config-dir", str(REPO / "config" / config_dir), "--config-name", config,
            f"common.user_dir={REPO / 'd2v_plugin'}", *overrides]


def run_hydra_train(config_dir: str, config: str, overrides: List[str], cwd: Path,
                    timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = hydra_command(config_dir, config, overrides)
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


def kill_after_first_checkpoint(config: str, overrides: List[str], save_dir: Path, cwd: Path) -> int:
    """Start pretraining, SIGKILL it at a random moment after its first checkpoint_last.pt
    appears, and return the update that checkpoint holds (where a re-run resumes)."""
    import torch

    victim = subprocess.Popen(hydra_command("pretraining", config, overrides), cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (save_dir / "checkpoint_last.pt").exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.0, 1.0))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    saved = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)
    return int(saved["optimizer_history"][-1]["num_updates"])


def assert_same_rows_after_resume(resumed: List[Dict], reference_rows: List[Dict], resume_at: int,
                                  last_update: int,
                                  keys=("loss", "target_var", "pred_var", "ema_decay")) -> None:
    """The re-run logs updates resume_at+1 .. last_update, each equal to the uninterrupted run's."""
    assert int(resumed[0]["num_updates"]) == resume_at + 1
    assert int(resumed[-1]["num_updates"]) == last_update
    reference = {int(r["num_updates"]): r for r in reference_rows}
    for row in resumed:
        n = int(row["num_updates"])
        for key in keys:
            assert row[key] == reference[n][key], f"update {n}: {key} {row[key]} != {reference[n][key]}"


def assert_same_teacher(checkpoint: Path, expected_checkpoint: Path) -> None:
    """Both checkpoints hold bit-identical EMA teachers (the ``_ema`` entry of the model)."""
    import torch

    final = torch.load(checkpoint, weights_only=True)["model"]["_ema"]
    expected = torch.load(expected_checkpoint, weights_only=True)["model"]["_ema"]
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(final[name], tensor), name
