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
