"""A checkpoint written by the reference data2vec 2.0 implementation (recorded user_dir and
data paths that exist nowhere) fine-tunes for CTC through fairseq's wav2vec_ctc."""
from pathlib import Path

import pytest

from reference_fixture import fixture_dir, require_files
from cli_utils import json_rows, run_hydra_train, run_python

REPO = Path(__file__).resolve().parent.parent
FIXTURE = fixture_dir("upstream_d2v2_audio")
require_files(FIXTURE, ["checkpoint_training_state.pt"], "reference data2vec 2.0 audio fixture")

pytestmark = pytest.mark.slow


def test_reference_checkpoint_fine_tunes_with_ctc_and_reports_valid_wer(speech_corpus, tmp_path):
    proc = run_hydra_train("finetuning", "tiny", [
        f"task.data={speech_corpus}", f"model.w2v_path={FIXTURE / 'checkpoint_training_state.pt'}",
        f"checkpoint.save_dir={tmp_path / 'ckpt'}", "optimization.max_update=12",
        "dataset.validate_interval_updates=12", "common.log_interval=1",
        "model.freeze_finetune_updates=4"], cwd=tmp_path)
    output = proc.stdout + proc.stderr
    train = json_rows(output)
    valid = json_rows(output, tag="valid")
    assert [int(r["num_updates"]) for r in train] == list(range(1, 13))
    assert valid and 0 <= float(valid[-1]["valid_wer"]) <= 100
    assert (tmp_path / "ckpt" / "checkpoint_best.pt").exists()
    out = run_python(f"""
import d2v_plugin, torch
from fairseq import checkpoint_utils
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
    [{str(tmp_path / 'ckpt' / 'checkpoint_best.pt')!r}], arg_overrides={{"data": {str(speech_corpus)!r}}})
m = models[0].eval()
enc = m.w2v_encoder.w2v_model
print(type(m).__name__, type(enc).__name__, enc.teacher is None,
      any(k.endswith("decoder.proj.weight") for k in enc.state_dict()))
""")
    assert out.split()[-4:] == ["Wav2VecCtc", "Data2Vec2Model", "True", "False"]
