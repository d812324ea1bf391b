"""CTC fine-tuning of our pretrained checkpoint through the real fairseq-hydra-train."""
import pytest
import torch

import d2v_plugin  # noqa: F401  (allow-lists the pickled Dictionary of fine-tuned checkpoints)

from cli_utils import json_rows, run_hydra_train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pretrained(speech_corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pretrain_for_ft")
    run_hydra_train("pretraining", "tiny_audio", [
        f"task.data={speech_corpus}", f"checkpoint.save_dir={run_dir}", "optimization.max_update=40",
        "lr_scheduler.warmup_updates=10", "dataset.disable_validation=true", "dataset.max_tokens=96000"],
        cwd=run_dir)
    return run_dir / "checkpoint_last.pt"


def test_finetuning_learns_reports_valid_wer_and_keeps_the_feature_encoder_frozen(pretrained, speech_corpus,
                                                                                 tmp_path):
    proc = run_hydra_train("finetuning", "tiny", [
        f"task.data={speech_corpus}", f"model.w2v_path={pretrained}", f"checkpoint.save_dir={tmp_path / 'ft'}",
        "optimization.max_update=48", "model.freeze_finetune_updates=8", "common.log_interval=1",
        "dataset.validate_interval_updates=48", "checkpoint.save_interval_updates=48"], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    losses = [float(r["loss"]) for r in json_rows(output)]
    assert len(losses) == 48
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8, losses
    valid = json_rows(output, tag="valid")
    assert valid and 0 <= float(valid[-1]["valid_wer"]) <= 100 and "valid_uer" in valid[-1]
    best = tmp_path / "ft" / "checkpoint_best.pt"
    assert best.exists()

    tuned = torch.load(best, weights_only=True)["model"]  # Dictionary in task_state: allow-listed
    start = torch.load(pretrained, weights_only=True)["model"]
    prefix = "w2v_encoder.w2v_model."
    conv = "modality_encoders.AUDIO.local_encoder.conv_layers.0.0.weight"
    assert torch.equal(tuned[prefix + conv], start[conv])  # feature encoder frozen throughout
    block = "blocks.0.mlp.fc1.weight"
    assert not torch.equal(tuned[prefix + block], start[block])  # the encoder trained after the freeze
    assert not any(k.startswith(prefix + "modality_encoders.AUDIO.decoder") or "_ema" in k for k in tuned)
