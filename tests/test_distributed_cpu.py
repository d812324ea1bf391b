"""Two processes on fairseq's own distributed stack (gloo, one process per rank, tcp init)
train the tiny config like one process with the same global batch (update_freq 2)."""
import os
import socket
import subprocess

import pytest

from cli_utils import HYDRA_TRAIN, REPO, json_rows, run_hydra_train

pytestmark = pytest.mark.slow
UPDATES = 8
# Randomness that legitimately differs between the layouts (dropout streams per rank) is off.
DETERMINISTIC = ["model.encoder_dropout=0.0", "model.attention_dropout=0.0", "model.post_mlp_drop=0.0",
                 "model.layerdrop=0.0", "model.modalities.audio.mask_noise_std=0.0",
                 "model.modalities.audio.decoder.input_dropout=0.0", "+model.modalities.audio.prenet_dropout=0.0"]


def common(corpus, save_dir):
    return [f"task.data={corpus}", f"checkpoint.save_dir={save_dir}", f"optimization.max_update={UPDATES}",
            "common.log_format=json", "common.log_interval=1", "dataset.disable_validation=true",
            "dataset.max_tokens=64000", "dataset.num_workers=0", "lr_scheduler.warmup_updates=4",
            f"common.user_dir={REPO / 'd2v_plugin'}", *DETERMINISTIC]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(speech_corpus, tmp_path):
    single = run_hydra_train("pretraining", "tiny_audio",
                             common(speech_corpus, tmp_path / "single") + ["optimization.update_freq=[2]"],
                             cwd=tmp_path)
    single_rows = json_rows(single.stdout + single.stderr)

    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ranks = []
    for rank in range(2):
        args = common(speech_corpus, tmp_path / "ddp") + [
            "distributed_training.distributed_world_size=2", f"distributed_training.distributed_rank={rank}",
            f"distributed_training.distributed_init_method=tcp://127.0.0.1:{port}",
            "distributed_training.distributed_no_spawn=true", "distributed_training.device_id=0",
            "distributed_training.distributed_backend=gloo", "distributed_training.ddp_backend=legacy_ddp"]
        ranks.append(subprocess.Popen(
            [HYDRA_TRAIN, "--config-dir", str(REPO / "config" / "pretraining"), "--config-name", "tiny_audio",
             *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    ddp_rows = json_rows(outputs[0])

    assert [int(r["num_updates"]) for r in ddp_rows] == list(range(1, UPDATES + 1))
    for single_row, ddp_row in zip(single_rows, ddp_rows):
        assert float(ddp_row["loss"]) == pytest.approx(float(single_row["loss"]), rel=2e-3), ddp_row
        assert float(ddp_row["sample_size"]) == float(single_row["sample_size"])  # the same global batch
        assert float(ddp_row["target_var"]) > 0.1 and float(ddp_row["pred_var"]) > 0
