"""Every shipped config composes through the real fairseq-hydra-train (``--cfg job`` prints
the composed config without training) and builds its task and model."""
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from cli_utils import HYDRA_TRAIN

REPO = Path(__file__).resolve().parent.parent
PRETRAINING = sorted((REPO / "config" / "pretraining").glob("*.yaml"))


def compose(path: Path, overrides, cwd=REPO):
    proc = subprocess.run([HYDRA_TRAIN, "--config-dir", str(path.parent), "--config-name", path.stem,
                           *overrides, "--cfg", "job"], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return OmegaConf.create(yaml.safe_load(proc.stdout))


@pytest.mark.parametrize("path", PRETRAINING, ids=lambda p: p.stem)
def test_pretraining_config_composes_and_builds_the_model(path, tmp_path):
    import d2v_plugin  # noqa: F401
    from fairseq import tasks

    cfg = compose(path, [f"task.data={tmp_path}", "optimization.max_update=123"])
    assert cfg.task.data == str(tmp_path) and cfg.optimization.max_update == 123
    assert (REPO / cfg.common.user_dir).resolve() == REPO / "d2v_plugin"  # default: relative to the repo
    task = tasks.setup_task(cfg.task)
    if cfg.model.embed_dim > 128:  # keep the base configs cheap: same code path, one block
        cfg.model.depth, cfg.model.average_top_k_layers = 1, 1
    task.build_model(cfg.model)
    assert task.expander.clone_batch == cfg.model.clone_batch
    assert (cfg.model.clone_batch == 1) == cfg.model.encode_masked  # 1.0 recipe: one encoded view
