"""A regular (non-editable) ``pip install`` works on its own: configs, console scripts, training.

The working tree (tracked and new files, not the venv or tests/) is copied to a temporary
folder and installed with ``pip install -c constraints.txt <copy>`` into a fresh venv. From a
folder that is neither the repository nor the copy, with no PYTHONPATH: ``d2v-config-dir``
points into that venv's site-packages, ``d2v-train`` composes a shipped config and runs 2 tiny
pretraining updates with the installed plugin as ``common.user_dir``, writing a checkpoint.
Costs about a minute (pip's cache holds the wheels after the first run).
"""
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from cli_utils import json_rows

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _copy_sources(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for rel in listed:
        src = REPO / rel
        if rel.startswith("tests/") or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    root = tmp_path_factory.mktemp("install")
    src, env_dir = root / "src", root / "venv"
    _copy_sources(src)
    venv.create(env_dir, with_pip=True)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    proc = subprocess.run([*pip, "-c", str(REPO / "constraints.txt"), str(src)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shutil.rmtree(src)                    # nothing may read the sources after the install
    return env_dir


def _run(env_dir: Path, cmd, cwd: Path, timeout=600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "D2V_PLUGIN_DIR")}
    env.update(OMP_NUM_THREADS="1", PATH=f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_installed_package_ships_configs_outside_the_repository(installed, tmp_path):
    out = _run(installed, ["d2v-config-dir"], cwd=tmp_path).stdout.strip().splitlines()[-1]
    config_dir = Path(out)
    site = Path(_run(installed, ["python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    assert config_dir == site / "d2v_plugin" / "config"
    shipped = sorted(p.relative_to(config_dir).as_posix() for p in config_dir.rglob("*.yaml"))
    in_repo = sorted(p.relative_to(REPO / "config").as_posix() for p in (REPO / "config").rglob("*.yaml"))
    assert shipped == in_repo


def test_installed_d2v_train_runs_two_tiny_updates_from_any_folder(installed, speech_corpus, tmp_path):
    proc = _run(installed, [
        "d2v-train", "pretraining/tiny_audio", f"task.data={speech_corpus}",
        f"checkpoint.save_dir={tmp_path / 'ckpt'}", "optimization.max_update=2",
        "common.log_format=json", "common.log_interval=1", "dataset.disable_validation=true",
        "dataset.num_workers=0"], cwd=tmp_path)
    rows = json_rows(proc.stdout + proc.stderr)
    assert [int(r["num_updates"]) for r in rows] == [1, 2]
    info = json.loads(_run(installed, ["python", "-c", f"""
import json, torch
cfg = torch.load({str(tmp_path / 'ckpt' / 'checkpoint_last.pt')!r}, weights_only=True)["cfg"]
import d2v_plugin
print(json.dumps({{"user_dir": cfg["common"]["user_dir"], "plugin": d2v_plugin.__file__}}))
"""], cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert Path(info["user_dir"]) == Path(info["plugin"]).parent
    assert str(installed) in info["plugin"]
