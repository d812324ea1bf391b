"""benchmarks/gpu_throughput.py on CPU with the tiny config (the GPU run is the same code with
--device cuda --config base_audio): it runs end to end in seconds and every reported number is
positive, finite and consistent with the others. No speed is asserted."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_throughput.py"
sys.path.insert(0, str(REPO / "benchmarks"))


def run(tmp_path, *extra):
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--config", "tiny_audio", "--threads", "1",
           "--steps", "3", "--warmup", "1", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return run(tmp_path_factory.mktemp("gpu_fp32"))


def test_fields_are_sane_and_consistent(fp32):
    r, stdout = fp32
    assert r["device"] == "cpu" and r["precision"] == "fp32" and r["config"] == "tiny_audio"
    assert r["steps"] == 3 and len(r["seconds"]) == 3 and r["warmup"] == 1
    for key in ("sec_per_update", "median_sec_per_update", "updates_per_s", "audio_s_per_s",
                "audio_hours_per_hour", "audio_s_per_update", "flops_counted_update", "flops_per_update",
                "achieved_flops_per_s", "mfu_vs_matmul", "peak_memory_bytes", "peak_memory_gib"):
        assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] > 0, (key, r[key])
    assert all(math.isfinite(x) for x in r["losses"]) and len(r["losses"]) == 1 + 1 + 3
    # the rates follow from the timings and the batch
    assert r["sec_per_update"] == pytest.approx(sum(r["seconds"]) / 3)
    assert r["updates_per_s"] == pytest.approx(1 / r["sec_per_update"])
    assert r["audio_s_per_update"] == pytest.approx(r["utterances_per_update"] * r["utterance_samples"] / 16000)
    assert r["audio_s_per_s"] == pytest.approx(r["audio_s_per_update"] * r["updates_per_s"])
    assert r["audio_hours_per_hour"] == pytest.approx(r["audio_s_per_s"])  # hours per hour = seconds per second
    # batch: the tiny yaml's max_tokens (160,000) in utterances no longer than its max_sample_size (64,000)
    assert r["max_tokens"] == 160000 and r["utterance_samples"] <= 64000
    assert r["utterances_per_update"] * r["utterance_samples"] <= r["max_tokens"]
    # FLOPs: all timed batches have the counted batch's shape, so no scaling is involved here
    assert r["flops_per_update"] == pytest.approx(r["flops_counted_update"])
    assert r["achieved_flops_per_s"] == pytest.approx(r["flops_per_update"] * r["updates_per_s"])
    assert r["mfu_vs_matmul"] == pytest.approx(r["achieved_flops_per_s"] / r["matmul"]["best_flops_per_s"])
    assert 0 < r["mfu_vs_matmul"] < 1
    assert r["flops_by_op"]["aten.convolution_backward"] > 0 and sum(r["flops_by_op"].values()) == r["flops_counted_update"]
    # the student's transformer blocks alone, forward + backward: a lower bound on the count
    # (tiny: 4 blocks x 12 x 64^2 weights; B x M rows of ~half the frames; halved for layerdrop)
    frames = r["utterance_samples"] // 320
    rows = r["utterances_per_update"] * r["clone_batch"]
    assert r["flops_counted_update"] > 0.5 * 6 * (4 * 12 * 64 ** 2) * rows * frames * 0.45
    # no bf16 peak for a CPU; peak memory is the process's peak RSS, above torch's own footprint
    assert r["mfu_vs_peak"] is None and r["peak_table_key"] is None
    assert r["peak_memory_kind"].startswith("peak RSS") and r["peak_memory_gib"] > 0.2
    assert f"| {r['device_name']} | tiny_audio | fp32 |" in stdout


def test_bf16_autocast_path_runs_on_cpu(tmp_path):
    """The GPU default is bf16 autocast: the same code path, on CPU, trains with finite losses."""
    r, _ = run(tmp_path, "--precision", "bf16", "--steps", "2")
    assert r["precision"] == "bf16" and r["matmul"]["dtype"] == "bfloat16"
    assert all(math.isfinite(x) for x in r["losses"]) and r["achieved_flops_per_s"] > 0


def test_bf16_peak_table_lookup():
    from flops import BF16_DENSE_PEAK_TFLOPS, bf16_peak_tflops

    table = dict(BF16_DENSE_PEAK_TFLOPS)
    # torch.cuda.get_device_name() strings of the cards this script is meant for
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == (table["H100"], "H100")
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == (table["H100 PCIe"], "H100 PCIe")
    assert bf16_peak_tflops("NVIDIA H100 NVL") == (table["H100 NVL"], "H100 NVL")
    assert bf16_peak_tflops("NVIDIA H200") == (table["H200"], "H200")
    assert bf16_peak_tflops("NVIDIA GH200 480GB") == (table["GH200"], "GH200")
    assert bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == (table["A100"], "A100")
    assert bf16_peak_tflops("Tesla T4") == (None, None)
    assert table["H100 PCIe"] < table["H100"] and table["H200"] == table["H100"]  # same tensor cores
