"""Tests for examples/make_speech_corpus.py.

They build real (tiny) corpora with espeak-ng + sox and check what fairseq
and the fine-tuning recipes rely on: audio format and length, manifest and
label alignment, the letter dictionary, determinism and the idempotency stamp.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))  # importable by name, so worker processes can unpickle jobs
import make_speech_corpus as msc  # noqa: E402

_missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
needs_tools = pytest.mark.skipif(
    bool(_missing), reason=f"speech corpus generation needs {' and '.join(_missing)} on PATH"
)

SIZES = {"num_train": 12, "num_valid": 4, "num_test": 4}
MIN_RMS = 0.01  # espeak speech is ~0.05-0.2 RMS; digital silence is 0


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _tsv(corpus: Path, split: str) -> tuple[Path, list[tuple[str, int]]]:
    root, *rows = _lines(corpus / f"{split}.tsv")
    return Path(root), [(rel, int(n)) for rel, n in (row.split("\t") for row in rows)]


def _label_files(corpus: Path) -> dict[str, bytes]:
    names = [f"{s}.{ext}" for s in msc.SPLITS for ext in ("wrd", "ltr", "phn", "spk")]
    names += ["dict.ltr.txt", "dict.phn.txt"]
    return {name: (corpus / name).read_bytes() for name in names}


def _audio_digests(corpus: Path) -> dict[str, str]:
    wav_root = corpus / "wav"
    return {
        str(p.relative_to(wav_root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(wav_root.rglob("*.wav"))
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    if _missing:
        pytest.skip(f"speech corpus generation needs {' and '.join(_missing)} on PATH")
    out = tmp_path_factory.mktemp("corpus")
    summary = msc.make_corpus(out, seed=1, workers=2, **SIZES)
    return out, summary


# ---------------------------------------------------------------- pure Python


def test_sentences_follow_templates_and_vocabulary():
    rng = random.Random(0)
    vocab = msc.vocabulary()
    for n_words, template in msc.TEMPLATES:
        for _ in range(50):
            words = template(rng)
            assert len(words) == n_words, (template.__name__, words)
            assert set(words) <= vocab, words
    for lo, hi in [(2, 7), (2, 2), (5, 7), (7, 7)]:
        for _ in range(100):
            words = msc.make_sentence(rng, lo, hi)
            assert lo <= len(words) <= hi
            for det, nxt in zip(words, words[1:]):  # article agrees with next word
                if det in ("a", "an"):
                    assert (det == "an") == (nxt[0] in "aeiou"), words


def test_letter_spelling():
    assert msc.wrd_to_ltr("HELLO WORLD") == "H E L L O | W O R L D |"
    assert msc.wrd_to_ltr("IT'S") == "I T ' S |"
    assert msc.words_to_wrd(["i", "don't", "run"]) == "I DON'T RUN"


# ---------------------------------------------------------------- real audio


@needs_tools
def test_audio_format_length_and_loudness(corpus):
    out, _ = corpus
    wavs = sorted((out / "wav").rglob("*.wav"))
    assert len(wavs) == sum(SIZES.values())
    for wav in wavs:
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        info = sf.info(str(wav))
        assert sr == 16_000 and audio.shape[1] == 1, wav
        assert info.subtype == "PCM_16", wav
        assert 1.0 <= audio.shape[0] / sr <= 4.0, (wav, audio.shape[0] / sr)
        rms = float(np.sqrt(np.mean(audio[:, 0] ** 2)))
        assert rms > MIN_RMS, (wav, rms)


@needs_tools
def test_manifests_match_wav_files(corpus):
    out, _ = corpus
    for split in msc.SPLITS:
        root, rows = _tsv(out, split)
        assert root == (out / "wav").resolve()
        assert len(rows) == SIZES[f"num_{split}"]
        on_disk = {str(p.relative_to(root)) for p in (root / split).glob("*.wav")}
        assert {rel for rel, _ in rows} == on_disk
        assert [rel for rel, _ in rows] == [f"{split}/{split}_{i:04d}.wav" for i in range(len(rows))]
        for rel, num_samples in rows:
            assert num_samples == sf.info(str(root / rel)).frames, rel


@needs_tools
def test_labels_align_with_manifest(corpus):
    out, _ = corpus
    vocab = {w.upper() for w in msc.vocabulary()}
    for split in msc.SPLITS:
        _, rows = _tsv(out, split)
        wrd = _lines(out / f"{split}.wrd")
        ltr = _lines(out / f"{split}.ltr")
        assert len(wrd) == len(ltr) == len(rows)
        for w_line, l_line in zip(wrd, ltr):
            words = w_line.split(" ")
            assert 2 <= len(words) <= 7
            assert all(re.fullmatch(r"[A-Z']+", w) for w in words), w_line
            assert set(words) <= vocab, w_line
            expected = " ".join(" ".join(word) + " |" for word in words)
            assert l_line == expected


@needs_tools
def test_dictionary_covers_all_letters(corpus):
    out, _ = corpus
    entries = [line.split(" ") for line in _lines(out / "dict.ltr.txt")]
    symbols = [sym for sym, _ in entries]
    counts = [int(n) for _, n in entries]
    assert len(symbols) == len(set(symbols))
    assert counts == sorted(counts, reverse=True)
    used = {tok for s in msc.SPLITS for line in _lines(out / f"{s}.ltr") for tok in line.split()}
    assert "|" in symbols and used <= set(symbols)
    assert set(symbols) == used  # nothing extra, e.g. no apostrophe unless used
    train = [tok for line in _lines(out / "train.ltr") for tok in line.split()]
    assert dict(zip(symbols, counts)) == {s: train.count(s) for s in symbols}


@needs_tools
def test_summary_and_stamp(corpus):
    out, summary = corpus
    assert summary["cached"] is False
    stamp = json.loads((out / msc.STAMP_NAME).read_text())
    assert stamp["version"] == msc.CORPUS_VERSION
    assert stamp["params"] == {**SIZES, "seed": 1}
    for split in msc.SPLITS:
        _, rows = _tsv(out, split)
        s = summary["splits"][split]
        assert s["count"] == len(rows)
        assert s["seconds"] == pytest.approx(sum(n for _, n in rows) / 16_000, abs=1e-3)
        assert sum(s["voices"].values()) == len(rows)
    assert len(summary["voices"]) > 1


@needs_tools
def test_rerun_is_a_noop(corpus):
    out, summary = corpus
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = msc.make_corpus(out, seed=1, workers=2, **SIZES)
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert again["cached"] is True
    assert again["splits"] == summary["splits"]
    assert after == before


@needs_tools
def test_same_seed_is_byte_identical(corpus, tmp_path):
    out, _ = corpus
    other = tmp_path / "again"
    msc.make_corpus(other, seed=1, workers=1, **SIZES)  # different worker count on purpose
    assert _label_files(other) == _label_files(out)
    for split in msc.SPLITS:
        assert _tsv(other, split)[1] == _tsv(out, split)[1]  # root line differs by design
    assert _audio_digests(other) == _audio_digests(out)


@needs_tools
def test_new_parameters_rebuild_without_stale_files(corpus, tmp_path):
    out, _ = corpus
    target = tmp_path / "resized"
    msc.make_corpus(target, seed=2, workers=2, **SIZES)
    assert (target / "train.wrd").read_bytes() != (out / "train.wrd").read_bytes()
    smaller = msc.make_corpus(target, num_train=5, num_valid=2, num_test=1, seed=2, workers=2)
    assert smaller["cached"] is False
    assert len(list((target / "wav" / "train").glob("*.wav"))) == 5
    assert len(_lines(target / "train.wrd")) == 5
    assert json.loads((target / msc.STAMP_NAME).read_text())["params"]["num_train"] == 5


@needs_tools
def test_every_voice_sounds_different(tmp_path):
    """espeak-ng silently ignores some voice spellings (e.g. "en-gb+f2"), so a
    typo in VOICES would quietly collapse speaker variety; guard against it."""
    digests = {}
    for i, voice in enumerate(msc.VOICES):
        wav = tmp_path / f"v{i}.wav"
        msc.synthesize("the quick brown dog runs home", voice, 160, 50, wav)
        digests[voice] = hashlib.sha256(wav.read_bytes()).hexdigest()
    assert len(set(digests.values())) == len(msc.VOICES), digests


# ---------------------------------------------------------------- phonemes, speakers, held-out voices


def test_ipa_tokens_drop_stress_keep_length():
    assert msc.ipa_to_phonemes("ð_ə d_ˈɑː_ɡ\nɹ_ˌʌ_n_z") == ["ð", "ə", "d", "ɑː", "ɡ", "ɹ", "ʌ", "n", "z"]
    assert msc.ipa_to_phonemes("  ˈ_aɪ  ") == ["aɪ"]


@needs_tools
def test_phonemes_and_speakers_align_with_manifest(corpus):
    out, summary = corpus
    symbols = [line.split(" ")[0] for line in _lines(out / "dict.phn.txt")]
    assert len(symbols) == len(set(symbols))
    used = set()
    for split in msc.SPLITS:
        _, rows = _tsv(out, split)
        phn, spk = _lines(out / f"{split}.phn"), _lines(out / f"{split}.spk")
        assert len(phn) == len(spk) == len(rows)
        assert all(line and "ˈ" not in line and "ˌ" not in line and "  " not in line for line in phn)
        used |= {t for line in phn for t in line.split(" ")}
        assert set(spk) <= set(msc.VOICES)
        assert dict(sorted(__import__("collections").Counter(spk).items())) == summary["splits"][split]["voices"]
    assert used == set(symbols)


@needs_tools
def test_phonemes_are_what_espeak_says_for_that_voice(corpus):
    """The .phn line is espeak-ng's own phonemisation of the .wrd text with that utterance's voice."""
    import subprocess

    out, _ = corpus
    for i in (0, 1):
        text = _lines(out / "train.wrd")[i].lower()
        voice = _lines(out / "train.spk")[i]
        ipa = subprocess.run(["espeak-ng", "-q", "--ipa", "--sep=_", "-v", voice, text],
                             capture_output=True, text=True, check=True).stdout
        assert _lines(out / "train.phn")[i] == " ".join(msc.ipa_to_phonemes(ipa))


def test_heldout_voice_choice():
    assert msc.resolve_heldout_voices(None, 1) == ()
    two = msc.resolve_heldout_voices(2, 1)
    assert len(two) == 2 and two == msc.resolve_heldout_voices("2", 1) and set(two) <= set(msc.VOICES)
    assert msc.resolve_heldout_voices("en-029,en-us", 1) == ("en-us", "en-029")  # VOICES order
    for bad in ("en-xx", len(msc.VOICES) - 1, ",".join(msc.VOICES)):
        with pytest.raises(ValueError):
            msc.resolve_heldout_voices(bad, 1)


@needs_tools
def test_heldout_voices_speak_only_test_unseen_and_unlabelled_hours(tmp_path):
    out = tmp_path / "heldout"
    hours = 0.005  # 18 s
    summary = msc.make_corpus(out, num_train=12, num_valid=4, num_test=4, seed=1, workers=2,
                              heldout_voices=2, num_test_unseen=4, unlabelled_hours=hours)
    heldout = set(summary["heldout_voices"])
    assert len(heldout) == 2
    unseen = set(_lines(out / "test_unseen.spk"))
    assert unseen <= heldout and len(_lines(out / "test_unseen.phn")) == 4
    for split in msc.SPLITS:
        assert not set(_lines(out / f"{split}.spk")) & heldout, split
    # unlabelled: audio only, seen voices, the shortest prefix of utterances holding the hours
    _, rows = _tsv(out, "unlabelled")
    assert not (out / "unlabelled.phn").exists() and not (out / "unlabelled.spk").exists()
    seconds = [n / 16_000 for _, n in rows]
    assert sum(seconds) >= hours * 3600 > sum(seconds[:-1])
    assert [rel for rel, _ in rows] == [f"unlabelled/unlabelled_{i:04d}.wav" for i in range(len(rows))]
    assert len(list((out / "wav" / "unlabelled").glob("*.wav"))) == len(rows)
    assert not set(summary["splits"]["unlabelled"]["voices"]) & heldout
    for split in (*msc.SPLITS, "test_unseen"):  # the dictionary covers held-out phonemes too
        symbols = {line.split(" ")[0] for line in _lines(out / "dict.phn.txt")}
        assert {t for line in _lines(out / f"{split}.phn") for t in line.split()} <= symbols
    # deterministic, and a rebuild without the options removes the optional splits
    again = msc.make_corpus(tmp_path / "again", num_train=12, num_valid=4, num_test=4, seed=1, workers=1,
                            heldout_voices=sorted(heldout), num_test_unseen=4, unlabelled_hours=hours)
    assert again["params"] == summary["params"]
    for name in ("test_unseen.phn", "test_unseen.spk", "train.phn", "dict.phn.txt"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    assert _tsv(tmp_path / "again", "unlabelled")[1] == rows
    msc.make_corpus(out, num_train=12, num_valid=4, num_test=4, seed=1, workers=2)
    assert not (out / "test_unseen.tsv").exists() and not (out / "unlabelled.tsv").exists()
    assert not list((out / "wav" / "unlabelled").glob("*.wav"))
