import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "examples"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs through the real CLI (still run in CI)")


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory):
    """A small real corpus (espeak-ng + sox), generated once per test session."""
    import shutil

    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("the speech corpus needs espeak-ng and sox on PATH (make system-deps)")
    from make_speech_corpus import make_corpus

    out = tmp_path_factory.mktemp("speech_corpus")
    make_corpus(out, num_train=120, num_valid=24, num_test=24, seed=3)
    return out


@pytest.fixture(scope="session")
def tiny_audio_run(speech_corpus, tmp_path_factory):
    """(run folder, json log rows, updates) of one 100-update tiny_audio pretraining on the session
    corpus, shared by the pretraining CLI tests and the speech probe tests."""
    from cli_utils import json_rows, run_hydra_train, tiny_audio_overrides

    updates = 100
    run_dir = tmp_path_factory.mktemp("tiny_audio_run")
    proc = run_hydra_train("pretraining", "tiny_audio",
                           tiny_audio_overrides(speech_corpus, run_dir / "ckpt", updates), cwd=run_dir)
    return run_dir, json_rows(proc.stdout + proc.stderr), updates


@pytest.fixture(scope="session")
def tiny_audio_pretrained(tiny_audio_run):
    """checkpoint_last.pt of tiny_audio_run (update 100)."""
    return tiny_audio_run[0] / "ckpt" / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def text_pipeline_prepared(tmp_path_factory):
    """(root, corpus, data-bin) of the embedded text corpus with odd lines (text_pipeline.py)."""
    from text_pipeline import prepare_corpus

    return prepare_corpus(tmp_path_factory.mktemp("text_cli"))


@pytest.fixture(scope="session")
def text_pipeline_trained(text_pipeline_prepared):
    """(run folder, train rows, valid rows) of a short tiny_text pretraining run."""
    from text_pipeline import pretrain

    return pretrain(text_pipeline_prepared)


@pytest.fixture(scope="session")
def tiny_asr_checkpoints(speech_corpus, tmp_path_factory):
    """{"pretrained", "finetuned", "deleted_w2v"}: tiny_audio pretrained 30 updates, then CTC
    fine-tuned 30 updates (fairseq's wav2vec_ctc, config/finetuning/tiny.yaml) from a copy of
    it that is then DELETED (``deleted_w2v``), so users of the fine-tuned checkpoint also show
    it stands alone. Shared by test_asr_tools.py and test_hf_export.py."""
    import shutil

    from cli_utils import run_hydra_train

    run_dir = tmp_path_factory.mktemp("asr_ckpts")
    run_hydra_train("pretraining", "tiny_audio", [
        f"task.data={speech_corpus}", f"checkpoint.save_dir={run_dir / 'pre'}",
        "optimization.max_update=30", "dataset.disable_validation=true", "dataset.max_tokens=96000",
        "checkpoint.save_interval_updates=1000",
        "lr_scheduler.warmup_updates=10"], cwd=run_dir)  # cosine needs max_update > warmup
    pretrained = run_dir / "pre" / "checkpoint_last.pt"
    w2v = run_dir / "w2v" / "pretrained_copy.pt"
    w2v.parent.mkdir()
    shutil.copy(pretrained, w2v)
    run_hydra_train("finetuning", "tiny", [
        f"task.data={speech_corpus}", f"model.w2v_path={w2v}", f"checkpoint.save_dir={run_dir / 'ft'}",
        "optimization.max_update=30", "dataset.disable_validation=true", "dataset.max_tokens=120000",
        "common.log_interval=10"], cwd=run_dir)
    w2v.unlink()   # the fine-tuned checkpoint must not need it
    return {"pretrained": pretrained, "finetuned": run_dir / "ft" / "checkpoint_last.pt",
            "deleted_w2v": w2v}
