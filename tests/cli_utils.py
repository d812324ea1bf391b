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


def tiny_audio_overrides(corpus, save_dir, max_update) -> List[str]:
    """The short tiny_audio pretraining of the tests (json log rows every update, no validation)."""
    return [f"task.data={corpus}", f"checkpoint.save_dir={save_dir}",
            f"optimization.max_update={max_update}", "common.log_format=json", "common.log_interval=1",
            "dataset.max_tokens=96000", "dataset.disable_validation=true",
            "checkpoint.save_interval_updates=50", "dataset.num_workers=1"]


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


def score_in_fresh_process(checkpoint: Path, split: str = "test",
                           head: str = "sentence_classification_head") -> Dict:
    """Load a fine-tuned classification checkpoint with load_model_ensemble_and_task in a fresh
    interpreter and count, by hand, its correct predictions over every example of ``split``
    (one batch): {"n", "correct", "model", "modality", "classes", "pretrained_args_embedded"}."""
    out = run_python(f"""
import json, torch, d2v_plugin
from fairseq import checkpoint_utils
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([{str(checkpoint)!r}])
model = models[0].eval()
task.load_dataset({split!r})
data = task.dataset({split!r})
batch = data.collater([data[i] for i in range(len(data))])
with torch.no_grad():
    logits, _ = model(**batch["net_input"], classification_head_name={head!r})
print(json.dumps({{"n": len(data), "correct": int((logits.argmax(-1) == batch["target"].view(-1)).sum()),
                   "model": type(model).__name__, "modality": model.encoder.modality,
                   "classes": getattr(task, "classes", None),
                   "pretrained_args_embedded": cfg.model.pretrained_args is not None}}))
""")
    return json.loads(out.strip().splitlines()[-1])


def fairseq_validate_test(data: Path, checkpoint: Path, task_args: List[str], cwd: Path) -> Dict:
    """Run ``fairseq-validate DATA --path CKPT --user-dir d2v_plugin <task_args> --valid-subset test
    --batch-size 64 --cpu`` and read its summary line: {"bsz": examples scored, "accuracy": %}."""
    import re

    cmd = [str(Path(sys.executable).with_name("fairseq-validate")), str(data), "--path", str(checkpoint),
           "--user-dir", str(REPO / "d2v_plugin"), *task_args, "--valid-subset", "test",
           "--batch-size", "64", "--cpu"]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    line = [l for l in (proc.stdout + proc.stderr).splitlines() if "valid on 'test' subset" in l][-1]
    return {"bsz": int(re.search(r"bsz (\d+)", line).group(1)),
            "accuracy": float(re.search(r"accuracy ([\d.]+)", line).group(1))}
