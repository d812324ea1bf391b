"""The reference-equality tests run from a plain clone: the fixtures travel with the repository.

A fresh ``git clone`` of this repository's HEAD into a folder with nothing beside it (no
``../shared``), ``D2V_FIXTURES`` unset, runs one reference-fixture test with the clone's own
code and fixtures: it must pass, not skip. (It tests what is committed, as CI does.)
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                    reason="needs git and a git checkout")
def test_reference_fixture_test_passes_in_a_clone_with_nothing_beside_it(tmp_path):
    clone = tmp_path / "lonely" / "d2v"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    assert sorted(p.name for p in clone.parent.iterdir()) == ["d2v"]
    env = {k: v for k, v in os.environ.items() if k != "D2V_FIXTURES"}
    env.update(PYTHONPATH=str(clone), OMP_NUM_THREADS="1")   # the clone's d2v_plugin, not ours
    test = "tests/test_reference_audio_fixture.py::test_reference_checkpoint_local_features_match"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed" in out and "skipped" not in out, out
