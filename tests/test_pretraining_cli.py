"""The tiny config through the real ``fairseq-hydra-train``: it learns, it saves, it resumes."""
import json
import os
import subprocess

import pytest
import torch

from cli_utils import (HYDRA_TRAIN, REPO, assert_same_rows_after_resume, json_rows,
                       kill_after_first_checkpoint, run_hydra_train, run_python, tiny_audio_overrides)

pytestmark = pytest.mark.slow

UPDATES = 100  # the session fixture tiny_audio_run (conftest.py)


def train_overrides(corpus, save_dir, max_update):
    return tiny_audio_overrides(corpus, save_dir, max_update)


@pytest.fixture(scope="module")
def uninterrupted(tiny_audio_run):
    run_dir, rows, updates = tiny_audio_run
    assert updates == UPDATES
    return run_dir, rows


def test_tiny_pretraining_loss_goes_down_without_collapse(uninterrupted):
    _, rows = uninterrupted
    assert [int(r["num_updates"]) for r in rows] == list(range(1, UPDATES + 1))
    losses = [float(r["loss"]) for r in rows]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, f"loss did not fall enough: first 10 mean {first:.3f}, last 10 mean {last:.3f}"
    assert min(float(r["target_var"]) for r in rows) > 0.1  # the collapse threshold
    for key in ("loss", "target_var", "pred_var", "ema_decay", "masked_pct", "target_slowness"):
        assert key in rows[-1], f"json log row lacks {key}"
    assert abs(float(rows[-1]["masked_pct"]) - 0.5) < 0.05
    assert all(-1.0 <= float(r["target_slowness"]) <= 1.0 for r in rows)


def test_checkpoint_loads_in_fresh_process_with_teacher(uninterrupted):
    run_dir, _ = uninterrupted
    ckpt = run_dir / "ckpt" / "checkpoint_last.pt"
    out = run_python(f"""
import json, torch, d2v_plugin
from fairseq import checkpoint_utils
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([{str(ckpt)!r}])
m = models[0].eval()
state = torch.load({str(ckpt)!r}, weights_only=True)
same = all(torch.equal(p, state["model"]["_ema"][n]) for n, p in m.teacher.model.named_parameters())
f = m.extract_features(torch.randn(2, 16000))
print(json.dumps({{"cls": type(m).__name__, "task": type(task).__name__, "teacher_same": same,
                   "shape": list(f["x"].shape), "layers": len(f["layer_results"]),
                   "teacher_updates": m.teacher.num_updates}}))
""")
    info = json.loads(out.strip().splitlines()[-1])
    assert info == {"cls": "Data2Vec2Model", "task": "Data2VecPretrainingTask", "teacher_same": True,
                    "shape": [2, 49, 64], "layers": 4, "teacher_updates": UPDATES - 1}


def test_killed_run_resumes_from_checkpoint_last_with_same_losses_and_teacher(uninterrupted, speech_corpus,
                                                                             tmp_path):
    """SIGKILL mid-training, re-run the same command: every logged loss after the resume
    point equals the uninterrupted run's, and the final teacher is the same."""
    _, reference_rows = uninterrupted
    save_dir = tmp_path / "ckpt"
    overrides = train_overrides(speech_corpus, save_dir, UPDATES) + ["checkpoint.save_interval_updates=30"]
    resume_at = kill_after_first_checkpoint("tiny_audio", overrides, save_dir, tmp_path)
    assert 30 <= resume_at < UPDATES
    for checkpoint in save_dir.glob("*.pt"):  # a killed write may leave a .tmp, never a broken .pt
        torch.load(checkpoint, weights_only=True)

    proc = run_hydra_train("pretraining", "tiny_audio", overrides, cwd=tmp_path)
    assert_same_rows_after_resume(json_rows(proc.stdout + proc.stderr), reference_rows, resume_at, UPDATES)
    final = torch.load(save_dir / "checkpoint_last.pt", weights_only=True)["model"]
    uninterrupted_final = torch.load(uninterrupted[0] / "ckpt" / "checkpoint_last.pt", weights_only=True)["model"]
    assert int(final["_ema_num_updates"]) == int(uninterrupted_final["_ema_num_updates"]) == UPDATES - 1
    for name, tensor in uninterrupted_final["_ema"].items():
        assert torch.equal(final["_ema"][name], tensor), name


@pytest.mark.parametrize("style", ["plain", "omegaconf_objects"])
def test_own_checkpoint_loads_in_fresh_process_in_every_pickle_style(uninterrupted, tmp_path, style):
    """Our checkpoint (also re-saved with its cfg pickled as omegaconf objects, as some fairseq
    releases did) with a recorded user_dir that no longer exists loads with weights_only."""
    from omegaconf import OmegaConf

    state = torch.load(uninterrupted[0] / "ckpt" / "checkpoint_last.pt", weights_only=True)
    state["cfg"]["common"]["user_dir"] = "/nonexistent/moved/d2v_plugin"
    if style == "omegaconf_objects":
        state["cfg"] = OmegaConf.create(state["cfg"])
    path = tmp_path / f"{style}.pt"
    torch.save(state, path)
    out = run_python(f"""
import torch, d2v_plugin
from fairseq import checkpoint_utils
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([{str(path)!r}])
print(type(models[0]).__name__, models[0].teacher.num_updates)
""")
    assert out.split()[-2:] == ["Data2Vec2Model", str(UPDATES - 1)]


def test_checkpoint_with_a_pickled_callable_is_still_refused(uninterrupted, tmp_path):
    import os

    state = torch.load(uninterrupted[0] / "ckpt" / "checkpoint_last.pt", weights_only=True)
    state["extra_state"]["hook"] = os.getcwd  # anything callable must stay refused
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    with pytest.raises(AssertionError, match="Weights only load failed"):
        run_python(f"""
import d2v_plugin
from fairseq import checkpoint_utils
checkpoint_utils.load_model_ensemble_and_task([{str(path)!r}])
""")


def test_the_readme_command_runs_from_the_repo_root_without_user_dir_or_absolute_paths(speech_corpus, tmp_path):
    """`fairseq-hydra-train --config-dir config/pretraining --config-name tiny_audio task.data=...`
    exactly as users type it: hydra must not move into outputs/ (hydra.job.chdir: false), so the
    config's default user_dir `d2v_plugin` and relative data/save paths resolve from the repo root."""
    data = os.path.relpath(speech_corpus, REPO)
    save_dir = os.path.relpath(tmp_path / "ckpt", REPO)
    env = {k: v for k, v in os.environ.items() if k != "D2V_PLUGIN_DIR"}
    proc = subprocess.run(
        [HYDRA_TRAIN, "--config-dir", "config/pretraining", "--config-name", "tiny_audio",
         f"task.data={data}", f"checkpoint.save_dir={save_dir}", "optimization.max_update=2",
         "dataset.disable_validation=true", "common.log_format=json", "common.log_interval=1",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(env, OMP_NUM_THREADS="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert len(json_rows(out)) == 2
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").exists()
