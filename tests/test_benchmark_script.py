"""Smoke test of benchmarks/pretraining_throughput.py (not a timing test: no speed is asserted).

Runs the script end to end on the two tiny configs, 2 timed updates each with small batches,
plus a 1-update part-by-part profile, on a small synthetic corpus, and checks that every
config reports positive numbers and that the markdown and JSON outputs are written.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "pretraining_throughput.py"
CONFIGS = ["tiny_audio", "tiny_audio_d2v1"]


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
           "--breakdown", "tiny_audio", "--breakdown-steps", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
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
    assert results["tiny_audio"]["clone_batch"] > 1 and results["tiny_audio_d2v1"]["clone_batch"] == 1
    assert results["tiny_audio"]["rows_per_update"] == pytest.approx(
        results["tiny_audio"]["samples_per_update"] * results["tiny_audio"]["clone_batch"])
    assert results["tiny_audio"]["audio_s_per_update"] == pytest.approx(
        results["tiny_audio_d2v1"]["audio_s_per_update"])  # same batches for both recipes


def test_ratios_and_breakdown(report):
    _, data, _ = report
    (ratio,) = data["ratios"]
    assert ratio["size"] == "tiny" and ratio["same_batches"]
    for key in ("time_per_update", "paired_median_time_ratio", "audio_s_per_s", "peak_rss"):
        assert ratio[key] > 0, key
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
    assert "Ratios, data2vec 2.0 / data2vec 1.0" in text and "Where the time" in text
    assert text.strip() in stdout
