"""``d2v-train``: shipped config names resolve to hydra's --config-dir/--config-name, the
plugin becomes common.user_dir only where the yaml does not set it, fairseq's tqdm bar is
chosen only on a terminal; and for real, on a pseudo-terminal, 2 updates show the bar."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from d2v_plugin import resources
from d2v_plugin.console import UserInputError
from d2v_plugin.train import hydra_argv, resolve_config

REPO = Path(__file__).resolve().parent.parent


def test_shipped_names_resolve_in_a_clone_to_the_root_config_folder():
    assert resources.config_dir() == REPO / "config"          # editable install / clone
    assert resolve_config("pretraining/tiny_audio") == (REPO / "config" / "pretraining", "tiny_audio")
    assert resolve_config("base_960h") == (REPO / "config" / "finetuning", "base_960h")
    assert "pretraining/base_audio" in resources.list_configs()
    assert not any("run_config" in name for name in resources.list_configs())


def test_a_yaml_path_is_its_own_config_dir(tmp_path):
    mine = tmp_path / "recipes" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("task:\n  _name: data2vec_pretraining\n")
    assert resolve_config(str(mine)) == (mine.parent, "mine")
    argv = hydra_argv(str(mine), ["task.data=x"], interactive=False)
    assert argv == ["--config-dir", str(mine.parent), "--config-name", "mine", "task.data=x",
                    f"common.user_dir={resources.plugin_dir()}"]   # the yaml does not set user_dir


def test_user_dir_and_progress_bar_only_where_not_given():
    shipped = hydra_argv("pretraining/tiny_audio", ["task.data=x"], interactive=True)
    assert not any(a.startswith("common.user_dir=") for a in shipped)   # the yaml reads $D2V_PLUGIN_DIR
    assert shipped[-1] == "common.log_format=tqdm"
    assert "common.log_format=tqdm" not in hydra_argv("pretraining/tiny_audio", [], interactive=False)
    mine = hydra_argv("pretraining/tiny_audio", ["common.log_format=json"], interactive=True)
    assert mine.count("common.log_format=json") == 1 and "common.log_format=tqdm" not in mine


def test_unknown_and_ambiguous_names_list_the_shipped_configs():
    with pytest.raises(UserInputError, match="no config 'tiny_audo'.*pretraining/tiny_audio"):
        resolve_config("tiny_audo")
    with pytest.raises(UserInputError, match="config file not found"):
        resolve_config("nowhere/mine.yaml")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a pseudo-terminal")
def test_on_a_terminal_fairseq_shows_its_progress_bar(speech_corpus, tmp_path):
    cmd = " ".join([str(Path(sys.executable).with_name("d2v-train")), "pretraining/tiny_audio",
                    f"task.data={speech_corpus}", f"checkpoint.save_dir={tmp_path / 'ckpt'}",
                    "optimization.max_update=2", "dataset.disable_validation=true", "dataset.num_workers=0"])
    # a pseudo-terminal of 0 columns (no parent terminal) would make tqdm print an empty bar
    proc = subprocess.run(["script", "-qec", f"stty cols 120 rows 40; {cmd}", str(tmp_path / "typescript")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "it/s]" in proc.stdout or "s/it]" in proc.stdout, proc.stdout[-3000:]   # tqdm's rate
    assert "[train_inner]" not in proc.stdout       # no simple/json interval lines on a terminal
    assert (tmp_path / "ckpt" / "checkpoint_last.pt").is_file()
    assert list((tmp_path / "ckpt" / "tb").glob("*/events.out.tfevents.*"))   # TensorBoard on
