"""Placement presets (config/pretraining/run_config) compose with every pretraining config
through the real fairseq-hydra-train (``--cfg all`` prints the composed job and hydra config)."""
import subprocess
from pathlib import Path

import pytest
import yaml

from cli_utils import HYDRA_TRAIN

REPO = Path(__file__).resolve().parent.parent
PRETRAINING = sorted(p.stem for p in (REPO / "config" / "pretraining").glob("*.yaml"))
RUN_CONFIGS = sorted(p.stem for p in (REPO / "config" / "pretraining" / "run_config").glob("*.yaml"))


@pytest.mark.parametrize("config", PRETRAINING)
@pytest.mark.parametrize("run_config", RUN_CONFIGS)
def test_run_config_composes_with_pretraining_config(config, run_config, tmp_path):
    proc = subprocess.run([HYDRA_TRAIN, "--config-dir", str(REPO / "config" / "pretraining"),
                           "--config-name", config, f"+run_config={run_config}", f"task.data={tmp_path}",
                           "--cfg", "all"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["task"]["data"] == str(tmp_path) and cfg["model"]["_name"] == "data2vec_multi"
    if run_config == "local":
        assert cfg["distributed_training"]["distributed_world_size"] == 1
        return
    nodes = int(run_config.split("_")[1])
    launcher = cfg["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["nodes"] == nodes and launcher["gpus_per_node"] == 8
    assert cfg["distributed_training"]["distributed_world_size"] == 8 * nodes
    assert cfg["distributed_training"]["distributed_port"] > 0  # fairseq's Slurm init needs a port
