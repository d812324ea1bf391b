"""A non-finite loss or gradient in fp32 training is a clear stop through the real CLI, never
silently averaged in: the run exits with FloatingPointError, every logged value before it is
finite, and the weights fairseq saves at the crash (crash.pt) are finite and equal to the
last good update's (checkpoint_last.pt): the bad update changed nothing.

Non-finite *input* audio is covered by tests/test_bad_audio_input.py (an error naming the file).
"""
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from cli_utils import HYDRA_TRAIN, REPO, json_rows

pytestmark = pytest.mark.slow
PROBE = REPO / "tests" / "probe_user_dir"


def train(corpus, save_dir: Path, overrides, env=None) -> subprocess.CompletedProcess:
    cmd = [HYDRA_TRAIN, "--config-dir", str(REPO / "config" / "pretraining"), "--config-name", "tiny_audio",
           f"task.data={corpus}", f"checkpoint.save_dir={save_dir}", "optimization.max_update=20",
           "common.log_format=json", "common.log_interval=1", "checkpoint.save_interval_updates=1",
           "dataset.disable_validation=true", "dataset.num_workers=0", "common.fp16=false", *overrides]
    return subprocess.run(cmd, cwd=save_dir.parent, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def load(path: Path):
    import d2v_plugin  # noqa: F401  (allow-lists the checkpoint's types for weights_only loading)

    return torch.load(path, map_location="cpu", weights_only=True)


def check_clear_stop(proc, save_dir: Path, message: str):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "FloatingPointError" in out and message in out, out[-3000:]
    rows = json_rows(out)
    assert 1 <= len(rows) < 20  # it stopped, and did not go on to max_update
    for row in rows:  # nothing non-finite was logged (hence nothing was averaged into the logs)
        for key in ("loss", "target_var", "pred_var", "gnorm"):
            assert math.isfinite(float(row[key])), row
    crash, last = load(save_dir / "crash.pt"), load(save_dir / "checkpoint_last.pt")
    assert last["extra_state"]["train_iterator"]["iterations_in_epoch"] == len(rows)
    assert crash["optimizer_history"][-1]["num_updates"] == len(rows)
    for name, tensor in crash["model"].items():
        if torch.is_tensor(tensor) and tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
    for name, tensor in last["model"].items():
        if not name.startswith("_ema"):  # the teacher catches up at the start of every update
            assert torch.equal(crash["model"][name], tensor), name
    assert all(torch.isfinite(t).all() for t in crash["model"]["_ema"].values())
    return rows


def test_diverging_training_stops_with_a_clear_error(speech_corpus, tmp_path):
    """lr 1e6: the first update blows the weights up, the next forward's loss is NaN."""
    save_dir = tmp_path / "ckpt"
    proc = train(speech_corpus, save_dir, ["optimization.lr=[1e6]", "lr_scheduler.warmup_updates=0",
                                           f"common.user_dir={REPO / 'd2v_plugin'}"])
    check_clear_stop(proc, save_dir, "non-finite data2vec loss")
    out = proc.stdout + proc.stderr
    assert "training diverged" in out and "lower optimization.lr" in out  # it says what happened


def test_non_finite_gradient_stops_training(speech_corpus, tmp_path):
    """A finite loss with a NaN gradient (injected after the backward of update 3 by the test
    user dir): fairseq's Trainer raises on the non-finite gradient norm before the step."""
    save_dir = tmp_path / "ckpt"
    proc = train(speech_corpus, save_dir, [f"common.user_dir={PROBE}", "task._name=data2vec_pretraining_probe"],
                 env={"PROBE_NAN_GRAD_AT": "3"})
    rows = check_clear_stop(proc, save_dir, "gradients are Nan/Inf")
    assert len(rows) == 3  # updates 0, 1, 2 (0-based) completed; update 3 was stopped
