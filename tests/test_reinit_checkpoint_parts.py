"""examples/reinit_checkpoint_parts.py: the parts named are exactly a fresh model's, the rest
exactly the pretrained model's, and the copy loads as any checkpoint (docs/results.md 3.5 fine-
tunes such a copy to tell which part of the pretrained model carries the gain)."""
import subprocess
import sys

import pytest
import torch

from cli_utils import REPO

pytestmark = pytest.mark.slow

SCRIPT = REPO / "examples" / "reinit_checkpoint_parts.py"


def test_named_parts_are_fresh_and_the_rest_pretrained(tiny_audio_pretrained, tmp_path):
    dst = tmp_path / "feature_encoder_only.pt"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tiny_audio_pretrained), str(dst), "--parts", "blocks.",
                           "modality_encoders.AUDIO.relative_positional_encoder"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    import d2v_plugin  # noqa: F401  (registers our task and model, as --user-dir does)
    from fairseq import checkpoint_utils, tasks
    from omegaconf import OmegaConf

    source = torch.load(tiny_audio_pretrained, map_location="cpu", weights_only=False)
    copy = torch.load(dst, map_location="cpu", weights_only=False)["model"]
    torch.manual_seed(0)
    cfg = OmegaConf.create(source["cfg"])
    fresh = tasks.setup_task(cfg.task).build_model(cfg.model).state_dict()
    reinit = [k for k in copy if k.startswith(("blocks.", "modality_encoders.AUDIO.relative_positional_encoder"))]
    kept = [k for k in copy if k not in reinit and torch.is_tensor(copy[k])]  # ("_ema" holds the teacher)
    assert reinit and any(k.startswith("modality_encoders.AUDIO.local_encoder") for k in kept)
    for k in reinit:
        assert torch.equal(copy[k], fresh[k]) and not torch.equal(copy[k], source["model"][k]), k
    for k in kept:
        assert torch.equal(copy[k], source["model"][k]), k

    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(dst)], arg_overrides={"data": str(tmp_path)})
    assert torch.equal(models[0].state_dict()["blocks.0.attn.qkv.weight"], fresh["blocks.0.attn.qkv.weight"])


def test_an_unknown_part_is_an_error_naming_it(tiny_audio_pretrained, tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tiny_audio_pretrained), str(tmp_path / "x.pt"),
                           "--parts", "blokcs."], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no parameter starts with 'blokcs.'" in proc.stderr
    assert not (tmp_path / "x.pt").exists()
