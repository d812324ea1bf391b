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
