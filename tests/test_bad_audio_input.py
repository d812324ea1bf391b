"""Bad audio input: each case gets a clear error naming the file (and manifest line) and
what is wrong, or a counted skip with a warning where skipping is what a user wants.

Every test writes real files to tmp_path and drives the dataset the way fairseq does:
AudioPretrainingDataset with a multi-mask BatchExpander, dataset[i], dataset.collater([...]).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from d2v_plugin.audio_frames import feature_lengths, parse_conv_spec, receptive_field
from d2v_plugin.data.audio_dataset import AudioFileError, AudioPretrainingDataset
from d2v_plugin.data.expander import BatchExpander
from d2v_plugin.data.manifest import ManifestError, read_manifest
from d2v_plugin.masking import BlockMaskSampler

TINY_SPEC = "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64,2,2)] + [(64,2,2)]"
CONV = parse_conv_spec(TINY_SPEC)
RF = receptive_field(CONV)  # 400 samples
SR = 16000
CLONES = 2


def _expander() -> BatchExpander:
    return BatchExpander(CLONES, BlockMaskSampler(mask_prob=0.5, mask_length=5, mask_prob_adjust=0.05))


def _dataset(manifest: Path, **kwargs) -> AudioPretrainingDataset:
    return AudioPretrainingDataset(str(manifest), CONV, sample_rate=SR, expander=_expander(),
                                   shuffle=False, **kwargs)


def _wav(path: Path, data: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, subtype=subtype)
    return path


def _speech(n: int = SR, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = (0.1 * np.random.default_rng(seed).standard_normal((n, channels))).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def _manifest(tmp_path: Path, rows: list[tuple[str, int]], name: str = "manifest.tsv") -> Path:
    """rows are (relative path, num samples); entry k is on manifest line k + 2."""
    path = tmp_path / name
    path.write_text("\n".join([str(tmp_path)] + [f"{rel}\t{n}" for rel, n in rows]) + "\n",
                    encoding="utf-8")
    return path


def _where(tmp_path: Path, rel: str, line: int) -> str:
    """The regex every per-file error must contain: the audio path and manifest.tsv:LINE."""
    return re.escape(str(tmp_path / rel)) + r".*" + re.escape(f"manifest.tsv:{line}")


# 1 ------------------------------------------------------------------------------------
def test_missing_audio_file_error_names_file_and_manifest_line(tmp_path):
    _wav(tmp_path / "good.wav", _speech())
    ds = _dataset(_manifest(tmp_path, [("good.wav", SR), ("gone.wav", SR)]))
    ds[0]  # the good one is fine
    with pytest.raises(AudioFileError, match=_where(tmp_path, "gone.wav", 3) + r".*not found"):
        ds.collater([ds[0], ds[1]])


def test_missing_audio_file_error_survives_dataloader_worker(tmp_path):
    _wav(tmp_path / "good.wav", _speech())
    ds = _dataset(_manifest(tmp_path, [("good.wav", SR), ("gone.wav", SR)]))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=ds.collater)
    with pytest.raises(AudioFileError, match=_where(tmp_path, "gone.wav", 3) + r".*not found"):
        for _ in loader:
            pass


# 2 ------------------------------------------------------------------------------------
def _text_renamed_wav(path: Path) -> None:
    path.write_text("this is a transcript, not audio\n", encoding="utf-8")


def _truncated_header(path: Path) -> None:
    good = _wav(path.with_suffix(".full.wav"), _speech())
    path.write_bytes(good.read_bytes()[:20])  # RIFF/WAVE + a cut-off 'fmt ' chunk


def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("make", [_text_renamed_wav, _truncated_header, _zero_bytes],
                         ids=["text_renamed_wav", "truncated_wav_header", "zero_bytes"])
def test_corrupt_audio_file_error_names_file_and_manifest_line(tmp_path, make):
    _wav(tmp_path / "good.wav", _speech())
    make(tmp_path / "bad.wav")
    ds = _dataset(_manifest(tmp_path, [("good.wav", SR), ("bad.wav", SR)]))
    with pytest.raises(AudioFileError, match=_where(tmp_path, "bad.wav", 3) + r".*not a readable audio file"):
        ds[1]


# 3 ------------------------------------------------------------------------------------
def test_wrong_sample_rate_error_names_found_and_expected_rate(tmp_path):
    _wav(tmp_path / "narrowband.wav", _speech(8000), sr=8000)
    ds = _dataset(_manifest(tmp_path, [("narrowband.wav", 8000)]))
    with pytest.raises(AudioFileError, match=_where(tmp_path, "narrowband.wav", 2)
                       + r".*8000 Hz.*expected 16000 Hz"):
        ds[0]


# 4 ------------------------------------------------------------------------------------
def test_multichannel_audio_error_names_channel_count(tmp_path):
    _wav(tmp_path / "stereo.wav", _speech(channels=2))
    ds = _dataset(_manifest(tmp_path, [("stereo.wav", SR)]))
    with pytest.raises(AudioFileError, match=_where(tmp_path, "stereo.wav", 2) + r".*2 channels, expected mono"):
        ds[0]


# 5 ------------------------------------------------------------------------------------
def _tiny_model():
    from d2v_plugin.models.config import Data2Vec2Config
    from d2v_plugin.models.data2vec2 import Data2Vec2Model

    cfg = OmegaConf.structured(Data2Vec2Config)
    cfg.depth, cfg.embed_dim, cfg.num_heads = 2, 32, 4
    cfg.clone_batch, cfg.average_top_k_layers = CLONES, 2
    audio = cfg.modalities.audio
    audio.feature_encoder_spec = TINY_SPEC.replace("64", "32")
    audio.decoder.decoder_dim, audio.decoder.decoder_groups = 16, 4
    return Data2Vec2Model(cfg)


def test_all_zero_audio_normalizes_to_zeros_and_gives_a_finite_loss(tmp_path):
    _wav(tmp_path / "silence1.wav", np.zeros(SR, np.float32))
    _wav(tmp_path / "silence2.wav", np.zeros(SR, np.float32))
    _wav(tmp_path / "good.wav", _speech())
    ds = _dataset(_manifest(tmp_path, [("silence1.wav", SR), ("silence2.wav", SR), ("good.wav", SR)]))
    item = ds[0]
    assert torch.isfinite(item["source"]).all()
    assert (item["source"] == 0).all()

    torch.manual_seed(0)
    model = _tiny_model().train()
    for ids in ([0, 1], [0, 2]):  # an all-silent batch, and silence next to speech
        batch = ds.collater([ds[i] for i in ids])
        assert torch.isfinite(batch["net_input"]["source"]).all()
        out = model(**batch["net_input"])
        loss = sum(v.sum() for v in out.losses.values())
        assert torch.isfinite(loss), f"batch {ids}: loss {loss}"
        assert torch.isfinite(torch.as_tensor(out.target_var))
        assert torch.isfinite(torch.as_tensor(out.pred_var))
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# 6 ------------------------------------------------------------------------------------
def test_clip_shorter_than_receptive_field_is_skipped_with_counted_warning(tmp_path, caplog):
    _wav(tmp_path / "good.wav", _speech())
    _wav(tmp_path / "blip.wav", _speech(100))
    manifest = _manifest(tmp_path, [("blip.wav", 100), ("good.wav", SR)])
    with caplog.at_level(logging.WARNING, logger="d2v_plugin.data.manifest"):
        ds = _dataset(manifest)
    assert len(ds) == 1 and ds.manifest.entries[0].path == str(tmp_path / "good.wav")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("manifest.tsv" in w and "skipped 1 of 2" in w and str(RF) in w for w in warnings), warnings
    batch = ds.collater([ds[0]])
    assert batch["net_input"]["source"].shape == (1, SR)


def test_manifest_overstating_a_short_clip_errors_at_load_naming_the_file(tmp_path):
    _wav(tmp_path / "good.wav", _speech())
    _wav(tmp_path / "blip.wav", _speech(100))
    ds = _dataset(_manifest(tmp_path, [("good.wav", SR), ("blip.wav", SR)]))  # lies: 16000
    assert len(ds) == 2
    with pytest.raises(AudioFileError, match=_where(tmp_path, "blip.wav", 3)
                       + rf".*100 samples, shorter than .*receptive field \({RF}\).*manifest says {SR}"):
        ds.collater([ds[0], ds[1]])


# 7 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_line", ["good.wav 16000", "good.wav", "good.wav\tsixteen", "good.wav\t-5",
                                      "good.wav\t16000.0"],
                         ids=["space_not_tab", "no_size", "word_size", "negative_size", "float_size"])
def test_malformed_manifest_line_raises_manifest_error_with_path_and_line(tmp_path, bad_line):
    _wav(tmp_path / "good.wav", _speech())
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(f"{tmp_path}\ngood.wav\t{SR}\n\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=re.escape(f"{manifest}:4") + r": expected '<relative path>"
                       r"<TAB><num samples>', got " + re.escape(repr(bad_line))):
        _dataset(manifest)


# 8 ------------------------------------------------------------------------------------
def test_zero_byte_manifest_raises_manifest_error_saying_it_is_empty(tmp_path):
    manifest = tmp_path / "manifest.tsv"
    manifest.write_bytes(b"")
    with pytest.raises(ManifestError, match=re.escape(str(manifest)) + r": empty manifest"):
        _dataset(manifest)


def test_root_only_manifest_raises_manifest_error_saying_no_utterances(tmp_path):
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(f"{tmp_path}\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=re.escape(str(manifest)) + r": no usable utterances \(lines: 0"):
        _dataset(manifest)


def test_missing_manifest_raises_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match=r"manifest not found: .*nope\.tsv"):
        read_manifest(str(tmp_path / "nope.tsv"))


# 9 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_float_wav_error_names_file(tmp_path, bad_value):
    data = _speech()
    data[1234] = bad_value
    _wav(tmp_path / "float.wav", data, subtype="FLOAT")
    ds = _dataset(_manifest(tmp_path, [("float.wav", SR)]))
    with pytest.raises(AudioFileError, match=_where(tmp_path, "float.wav", 2) + r".*NaN or infinite"):
        ds[0]


# 10 -----------------------------------------------------------------------------------
def test_good_one_second_clips_collate_into_equal_count_multi_mask_batch(tmp_path):
    rows = []
    for k, n in enumerate([SR, SR + 321, SR + 4000]):
        _wav(tmp_path / "sub" / f"utt{k}.wav", _speech(n, seed=k))
        rows.append((f"sub/utt{k}.wav", n))
    ds = _dataset(_manifest(tmp_path, rows))
    assert len(ds) == 3
    samples = [ds[i] for i in range(3)]
    for s, (_, n) in zip(samples, rows):
        assert s["source"].dtype == torch.float32 and s["source"].shape == (n,)
        assert abs(float(s["source"].mean())) < 1e-4 and abs(float(s["source"].std()) - 1) < 1e-2
    batch = ds.collater(samples)
    source, mask = batch["net_input"]["source"], batch["net_input"]["precomputed_mask"]
    frames = int(feature_lengths(SR, CONV))
    assert source.shape == (3, SR) and torch.isfinite(source).all()
    assert mask.shape == (3 * CLONES, frames) and mask.dtype == torch.bool
    counts = mask.sum(dim=1)
    assert (counts == counts[0]).all() and 0 < int(counts[0]) < frames
    assert batch["id"].tolist() == [0, 1, 2]
