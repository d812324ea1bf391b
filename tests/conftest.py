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
def text_pipeline_prepared(tmp_path_factory):
    """(root, corpus, data-bin) of the embedded text corpus with odd lines (text_pipeline.py)."""
    from text_pipeline import prepare_corpus

    return prepare_corpus(tmp_path_factory.mktemp("text_cli"))


@pytest.fixture(scope="session")
def text_pipeline_trained(text_pipeline_prepared):
    """(run folder, train rows, valid rows) of a short tiny_text pretraining run."""
    from text_pipeline import pretrain

    return pretrain(text_pipeline_prepared)
