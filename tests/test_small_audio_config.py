"""The CPU-sized speech recipe (config/pretraining/small_audio.yaml, chosen by the issue-14
search, docs/efficiency.md) composes and learns through the CLI users call; its fine-tuning
config (config/finetuning/small.yaml) and its wav2vec 2.0 peer (benchmarks/configs/
small_audio_w2v2.yaml) compose and train on top of / beside it."""
import math
import subprocess

import pytest
import torch

from cli_utils import HYDRA_TRAIN, REPO, json_rows, run_hydra_train

pytestmark = pytest.mark.slow

UPDATES = 40


def short_run(corpus, save_dir, updates=UPDATES):
    return [f"task.data={corpus}", f"checkpoint.save_dir={save_dir}", f"optimization.max_update={updates}",
            "common.log_format=json", "common.log_interval=1", "dataset.disable_validation=true",
            "dataset.num_workers=0"]


@pytest.fixture(scope="module")
def small_run(speech_corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("small_audio")
    proc = run_hydra_train("pretraining", "small_audio", short_run(speech_corpus, run_dir / "ckpt"), cwd=run_dir)
    return run_dir, json_rows(proc.stdout + proc.stderr)


def test_small_audio_composes_with_the_chosen_recipe_and_its_loss_falls(small_run):
    run_dir, rows = small_run
    assert [int(r["num_updates"]) for r in rows] == list(range(1, UPDATES + 1))
    losses = [float(r["loss"]) for r in rows]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses

    import d2v_plugin  # noqa: F401  (registers our task and model, as --user-dir does)
    from fairseq import checkpoint_utils

    models, cfg, _ = checkpoint_utils.load_model_ensemble_and_task(
        [str(run_dir / "ckpt" / "checkpoint_last.pt")], arg_overrides={"data": str(run_dir)})
    model = models[0]
    assert (cfg.model.depth, cfg.model.embed_dim, cfg.model.clone_batch) == (6, 128, 4)
    assert len(model.blocks) == 6
    assert 1.0e6 < sum(p.numel() for p in model.parameters() if p.requires_grad) < 3.0e6
    # the yaml's slow teacher: EMA 0.9999 from the first update on
    assert [float(r["ema_decay"]) for r in (rows[0], rows[-1])] == pytest.approx([0.9999, 0.9999], abs=1e-6)


def test_small_finetuning_config_trains_ctc_from_the_small_checkpoint(small_run, speech_corpus):
    run_dir, _ = small_run
    ft_dir = run_dir / "ft"
    ft_dir.mkdir()
    proc = run_hydra_train("finetuning", "small", [
        f"task.data={speech_corpus}", f"model.w2v_path={run_dir / 'ckpt' / 'checkpoint_last.pt'}",
        f"checkpoint.save_dir={ft_dir}", "optimization.max_update=30", "common.log_interval=1",
        "dataset.validate_interval_updates=30", "checkpoint.save_interval_updates=30"], cwd=ft_dir)
    rows = json_rows(proc.stdout + proc.stderr)
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5]), losses
    valid = json_rows(proc.stdout + proc.stderr, tag="valid")
    assert valid and math.isfinite(float(valid[-1]["valid_wer"]))  # > 100 with insertions early on
    # the encoder keeps the pretraining config's padding fix, so fine-tuning and decoding
    # do not depend on how a batch is padded (tests/test_audio_padding.py)
    state = torch.load(ft_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["cfg"]["model"]["w2v_args"]["model"]["modalities"]["audio"]["conv_pos_zero_padding"] is True


def test_small_wav2vec2_peer_composes_and_trains(speech_corpus, tmp_path):
    cmd_dir = REPO / "benchmarks" / "configs"
    proc = subprocess.run([HYDRA_TRAIN, "--config-dir", str(cmd_dir), "--config-name", "small_audio_w2v2",
                           *short_run(speech_corpus, tmp_path / "ckpt", updates=10)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = json_rows(proc.stdout + proc.stderr)
    assert len(rows) == 10 and all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    state = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["cfg"]["model"]["encoder_layers"] == 6 and state["cfg"]["model"]["encoder_embed_dim"] == 128
