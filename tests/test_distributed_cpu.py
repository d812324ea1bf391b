"""Two processes on fairseq's own distributed stack (gloo, one process per rank, tcp init)
train the tiny config like one process with the same global batch (update_freq 2): the same
losses update by update, the EMA teacher identical on every rank, and the logged
target_var/pred_var computed over the whole global batch (all ranks), not per rank.

Every rank's train_step results and teacher are observed through tests/probe_user_dir, a
fairseq user dir whose task is data2vec_pretraining itself plus a recorder (fairseq writes
checkpoints on rank 0 only)."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cli_utils import HYDRA_TRAIN, REPO, json_rows

pytestmark = pytest.mark.slow
UPDATES = 8
PROBE = REPO / "tests" / "probe_user_dir"
# Randomness that legitimately differs between the layouts (dropout streams per rank) is off.
# `++`: set whether or not the yaml lists the key (the yamls list only what differs from the defaults).
DETERMINISTIC = ["++model.encoder_dropout=0.0", "++model.attention_dropout=0.0", "++model.post_mlp_drop=0.0",
                 "++model.layerdrop=0.0", "++model.modalities.audio.mask_noise_std=0.0",
                 "++model.modalities.audio.decoder.input_dropout=0.0", "++model.modalities.audio.prenet_dropout=0.0"]


def common(corpus, save_dir):
    return [f"task.data={corpus}", f"checkpoint.save_dir={save_dir}", f"optimization.max_update={UPDATES}",
            "common.log_format=json", "common.log_interval=1", "dataset.disable_validation=true",
            "dataset.max_tokens=64000", "dataset.num_workers=0", "lr_scheduler.warmup_updates=4",
            f"common.user_dir={PROBE}", "task._name=data2vec_pretraining_probe", *DETERMINISTIC]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(overrides, cwd: Path, probe_dir: Path) -> subprocess.Popen:
    probe_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PROBE_DIR=str(probe_dir))
    return subprocess.Popen(
        [HYDRA_TRAIN, "--config-dir", str(REPO / "config" / "pretraining"), "--config-name", "tiny_audio",
         *overrides], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def probe_rows(probe_dir: Path, rank: int):
    return [json.loads(line) for line in (probe_dir / f"rank{rank}.jsonl").read_text().splitlines()]


def load_teacher(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(speech_corpus, tmp_path_factory):
    """One process with update_freq 2 and two gloo ranks, run at the same time."""
    tmp = tmp_path_factory.mktemp("ddp")
    procs = {"single": launch(common(speech_corpus, tmp / "single") + ["optimization.update_freq=[2]"],
                              tmp, tmp / "probe_single")}
    port = free_port()
    for rank in range(2):
        procs[f"rank{rank}"] = launch(common(speech_corpus, tmp / "ddp") + [
            "distributed_training.distributed_world_size=2", f"distributed_training.distributed_rank={rank}",
            f"distributed_training.distributed_init_method=tcp://127.0.0.1:{port}",
            "distributed_training.distributed_no_spawn=true", "distributed_training.device_id=0",
            "distributed_training.distributed_backend=gloo", "distributed_training.ddp_backend=legacy_ddp"],
            tmp, tmp / "probe_ddp")
    outputs = {name: p.communicate(timeout=900)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name} failed:\n" + outputs[name][-4000:]
    return tmp, outputs


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(runs):
    tmp, outputs = runs
    single_rows, ddp_rows = json_rows(outputs["single"]), json_rows(outputs["rank0"])
    assert [int(r["num_updates"]) for r in ddp_rows] == list(range(1, UPDATES + 1))
    for single_row, ddp_row in zip(single_rows, ddp_rows):
        assert float(ddp_row["loss"]) == pytest.approx(float(single_row["loss"]), rel=2e-3), ddp_row
        assert float(ddp_row["sample_size"]) == float(single_row["sample_size"])  # the same global batch
        assert float(ddp_row["target_var"]) > 0.1 and float(ddp_row["pred_var"]) > 0
    # and literally the same utterances: rank 0 + rank 1 of update u = the 2 forwards of update u
    single = probe_rows(tmp / "probe_single", 0)
    ranks = [probe_rows(tmp / "probe_ddp", r) for r in range(2)]
    for u in range(UPDATES):
        mine = sorted(i for r in ranks for row in r if row["update"] == u for i in row["ids"])
        theirs = sorted(i for row in single if row["update"] == u for i in row["ids"])
        assert mine == theirs, u


def test_ema_teacher_is_identical_on_every_rank(runs):
    tmp, _ = runs
    t0, t1 = (load_teacher(tmp / "probe_ddp" / f"teacher_rank{r}.pt") for r in range(2))
    assert t0["num_updates"] == t1["num_updates"] == UPDATES - 1  # caught up at the start of the last update
    assert t0["state"].keys() == t1["state"].keys() and len(t0["state"]) > 10
    for name, tensor in t0["state"].items():
        assert torch.equal(tensor, t1["state"][name]), name  # bit for bit
    # the teacher did move during training (the check above is not between two untouched copies)
    first = load_teacher(tmp / "probe_ddp" / "teacher_rank0_first.pt")
    assert any(not torch.equal(first["state"][n], t) for n, t in t0["state"].items())
    # what rank 0 observed is what fairseq saved in checkpoint_last.pt
    import d2v_plugin  # noqa: F401  (allow-lists the checkpoint's types for weights_only loading)
    saved = torch.load(tmp / "ddp" / "checkpoint_last.pt", map_location="cpu", weights_only=True)["model"]
    assert int(saved["_ema_num_updates"]) == UPDATES - 1
    for name, tensor in t0["state"].items():
        assert torch.equal(saved["_ema"][name], tensor), name
    # and it is the teacher of one process with the same global batch, up to float reordering
    single = load_teacher(tmp / "probe_single" / "teacher_rank0.pt")
    assert single["num_updates"] == UPDATES - 1
    for name, tensor in t0["state"].items():
        torch.testing.assert_close(tensor, single["state"][name], rtol=1e-3, atol=1e-4, msg=name)


def test_target_and_pred_var_are_aggregated_over_ranks(runs):
    tmp, outputs = runs
    ranks = [probe_rows(tmp / "probe_ddp", r) for r in range(2)]
    single = probe_rows(tmp / "probe_single", 0)
    logged_ddp, logged_single = json_rows(outputs["rank0"]), json_rows(outputs["single"])
    assert [len(r) for r in ranks] == [UPDATES, UPDATES] and len(single) == 2 * UPDATES
    for u in range(UPDATES):
        r0, r1 = ranks[0][u], ranks[1][u]
        assert r0["update"] == r1["update"] == u and set(r0["ids"]).isdisjoint(r1["ids"])
        # Each rank saw different utterances (its own loss) yet reports the same statistics:
        # they were all-reduced over the global batch.
        assert r0["loss"] != r1["loss"]
        for key in ("target_var", "pred_var"):
            assert r0[key] == pytest.approx(r1[key], rel=1e-6), (u, key)
            # what fairseq logs (the mean over the ranks' forwards) is that global value
            assert float(logged_ddp[u][key]) == pytest.approx(r0[key], abs=1e-4), (u, key)
        # One process with update_freq 2 computes the statistic per forward (half of the global
        # batch each), so its two values differ and it logs their mean; the global value over the
        # union of both halves must be close to that mean.
        halves = [row for row in single if row["update"] == u]
        assert len(halves) == 2 and halves[0]["target_var"] != halves[1]["target_var"]
        for key in ("target_var", "pred_var"):
            mean = (halves[0][key] + halves[1][key]) / 2
            assert float(logged_single[u][key]) == pytest.approx(mean, abs=1e-4)
            assert r0[key] == pytest.approx(mean, rel=2e-2), (u, key)


BATCH_STD_RANK = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    from d2v_plugin.models.objective import batch_std
    rank, port = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(0)
    full = torch.randn(50, 8, generator=g) * torch.linspace(0.5, 2.0, 8)
    full[20:] += 1.5                       # the two ranks' rows have different means
    local = full[:20] if rank == 0 else full[20:]   # and different counts (20 / 30)
    print(json.dumps({"rank": rank, "global": float(batch_std(local))}))
    dist.destroy_process_group()
""")


def test_batch_std_all_reduce_equals_the_statistic_of_the_whole_batch():
    """The collapse monitor's statistic over 2 gloo ranks = the single-process statistic of
    the concatenated rows (exactly, up to float32 rounding), not the mean of per-rank values."""
    from d2v_plugin.models.objective import batch_std

    port = str(free_port())
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, "-c", BATCH_STD_RANK, str(r), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    g = torch.Generator().manual_seed(0)
    full = torch.randn(50, 8, generator=g) * torch.linspace(0.5, 2.0, 8)
    full[20:] += 1.5
    expected = float(batch_std(full))
    per_rank_mean = (float(batch_std(full[:20])) + float(batch_std(full[20:]))) / 2
    assert abs(expected - per_rank_mean) > 0.05  # the data make the two readings distinguishable
    for r in results:
        assert r["global"] == pytest.approx(expected, rel=1e-5), r
