"""Smoke test of benchmarks/pretraining_throughput.py (not a timing test: no speed is asserted).

Runs the script end to end on the four tiny configs (data2vec 2.0 with M = 4 and, through an
override, M = 1; the data2vec 1.0 recipe; fairseq's own wav2vec 2.0), 2 timed updates each with
small batches, the FLOP count and the matmul timing, plus a 1-update part-by-part profile, on a
small synthetic corpus, and checks that every config reports positive, consistent numbers and
that the markdown and JSON outputs are written.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "pretraining_throughput.py"
CONFIGS = ["tiny_audio", "tiny_audio+model.clone_batch=1", "tiny_audio_d2v1", "tiny_audio_w2v2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """16 kHz mono utterances of 1.0-2.0 s (tiny_audio needs >= 16000 samples) + a manifest."""
    root = tmp_path_factory.mktemp("bench_corpus")
    wav_dir = root / "wav"
    wav_dir.mkdir()
    rng = np.random.default_rng(0)
    lines = [str(wav_dir)]
    for i in range(12):
        n = int(rng.integers(16000, 32000))
        t = np.arange(n) / 16000
        wav = 0.1 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(n)
        sf.write(wav_dir / f"u{i:02d}.wav", wav.astype(np.float32), 16000, subtype="PCM_16")
        lines.append(f"u{i:02d}.wav\t{n}")
    (root / "train.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def report(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_out") / "results.md"
    cmd = [sys.executable, str(SCRIPT), "--configs", *CONFIGS, "--data", str(corpus),
           "--steps", "2", "--warmup", "1", "--max-tokens", "64000", "--threads", "1",
           "--breakdown", "tiny_audio", "--breakdown-steps", "1", "--matmul-n", "1024", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out, json.loads(out.with_suffix(".json").read_text()), proc.stdout


def test_every_config_reports_positive_numbers(report):
    _, data, _ = report
    results = {r["config"]: r for r in data["results"]}
    assert sorted(results) == sorted(CONFIGS)
    for name, r in results.items():
        assert r["steps"] == 2 and r["warmup"] == 1, name
        for key in ("sec_per_update", "updates_per_s", "audio_s_per_s", "median_audio_s_per_s",
                    "student_rows_per_s", "audio_s_per_update", "samples_per_update", "peak_rss_mib",
                    "rss_import_mib", "params_student"):
            assert r[key] > 0, (name, key, r[key])
        assert r["peak_rss_mib"] >= r["rss_import_mib"], name
        assert r["max_tokens"] == 64000
    # d2v2 has M = clone_batch student rows per sample, the 1.0 recipe one; the audio counts once.
    d2v2, d2v2_m1 = results["tiny_audio"], results["tiny_audio+model.clone_batch=1"]
    assert d2v2["clone_batch"] > 1 and d2v2_m1["clone_batch"] == 1
    assert results["tiny_audio_d2v1"]["clone_batch"] == 1
    assert d2v2["rows_per_update"] == pytest.approx(d2v2["samples_per_update"] * d2v2["clone_batch"])
    for name in CONFIGS[1:3]:  # the data2vec configs see the same batches
        assert d2v2["audio_s_per_update"] == pytest.approx(results[name]["audio_s_per_update"])
    # the peer is fairseq's own wav2vec 2.0, not our model
    w2v2 = results["tiny_audio_w2v2"]
    assert (w2v2["family"], w2v2["model"], w2v2["task"], w2v2["criterion"]) == (
        "w2v2", "wav2vec2", "audio_pretraining", "wav2vec")
    assert (d2v2["model"], d2v2["task"], d2v2["criterion"]) == ("data2vec_multi", "data2vec_pretraining", "data2vec")
    # the same encoder size for every peer
    assert {(r["depth"], r["embed_dim"]) for r in results.values()} == {(4, 64)}


def test_flops_and_mfu(report):
    _, data, _ = report
    results = {r["config"]: r for r in data["results"]}
    matmul = data["matmul"]
    assert len(matmul) == 2 and all(m["n"] == 1024 and m["best_flops_per_s"] > 0 for m in matmul)
    peak = data["matmul_peak_flops_per_s"]
    assert peak == max(m["best_flops_per_s"] for m in matmul)
    for name, r in results.items():
        for key in ("flops_counted_update", "flops_per_audio_s", "flops_per_update", "achieved_flops_per_s", "mfu"):
            assert math.isfinite(r[key]) and r[key] > 0, (name, key, r[key])
        # FLOP/s = FLOPs per update / seconds per update; MFU = that / the measured matmul peak
        assert r["achieved_flops_per_s"] == pytest.approx(r["flops_per_update"] / r["sec_per_update"], rel=1e-9)
        assert r["mfu"] == pytest.approx(r["achieved_flops_per_s"] / peak, rel=1e-9)
        assert r["mfu"] < 1.0, (name, r["mfu"])  # a 300k-parameter model cannot beat a 1024^2 matmul
        # the counted update is a real forward + backward: convolutions and their backward, matmuls
        ops = r["flops_by_op"]
        assert ops.get("aten.convolution", 0) > 0 and ops.get("aten.convolution_backward", 0) > 0, ops
        # each gradient costs at most a forward (grouped convs are not overcounted; flops.py)
        assert ops["aten.convolution_backward"] <= 2 * ops["aten.convolution"], ops
        assert sum(ops.values()) == r["flops_counted_update"]
        # lower bound: the student blocks' linear layers alone, forward + backward (3 x 2 FLOPs per
        # weight per token; halved for layerdrop and rounding)
        rec = [x for x in r["records"] if "flops" in x][-1]
        tokens = rec["rows"] * (rec["frames"] if r["encode_masked"] else rec["kept"])
        block_weights = r["depth"] * 12 * r["embed_dim"] ** 2
        assert r["flops_counted_update"] > 0.5 * 6 * block_weights * tokens, name
    # all three data2vec configs counted FLOPs on the same batch: M = 4 copies cost more than one
    counted = {n: results[n]["flops_counted_update"] for n in CONFIGS}
    assert len({tuple([x for x in results[n]["records"] if "flops" in x][-1]["shape"]) for n in CONFIGS[:3]}) == 1
    assert counted["tiny_audio"] > counted["tiny_audio+model.clone_batch=1"]
    assert counted["tiny_audio_d2v1"] > counted["tiny_audio+model.clone_batch=1"]  # encodes the masked half too


def test_ratios_and_breakdown(report):
    _, data, _ = report
    ratios = {q["config"]: q for q in data["ratios"]}
    assert sorted(ratios) == sorted(c for c in CONFIGS if c != "tiny_audio_w2v2")
    for name, q in ratios.items():
        assert q["size"] == "tiny" and q["baseline"] == "tiny_audio_w2v2"
        for key in ("time_per_update", "paired_median_s_per_audio_s", "audio_s_per_s", "peak_rss",
                    "flops_per_audio_s", "achieved_flops_per_s"):
            assert q[key] > 0, (name, key)
    b = data["breakdown"]
    assert b["config"] == "tiny_audio" and b["profiled_update_ms"] > 0
    parts = {p["part"]: p for p in b["parts"]}
    for part in ("feature encoder", "student blocks", "decoder", "teacher", "adam"):
        assert parts[part]["total_ms"] > 0, part
    assert parts["feature encoder"]["backward_ms"] > 0  # backward time is attributed to parts
    assert b["top_ops"] and all(o["self_ms"] >= 0 for o in b["top_ops"])


def test_markdown_output(report):
    out, _, stdout = report
    text = out.read_text()
    for name in CONFIGS:
        assert f"| {name} |" in text
    assert "MFU vs matmul" in text and "Measured dense matmul peak" in text
    assert "| tiny | tiny_audio / tiny_audio_w2v2 |" in text and "Where the time" in text
    assert text.strip() in stdout
