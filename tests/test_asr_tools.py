"""The ASR tools end to end on checkpoints made through the real CLI.

One module-scoped fixture pretrains the tiny config and fine-tunes it with fairseq's own
``wav2vec_ctc``, then DELETES the pretrained file the fine-tuning read (``model.w2v_path``):
every decoding test below therefore also shows the fine-tuned checkpoint stands alone.
"""
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from cli_utils import REPO
from d2v_plugin.asr import extract_features, infer, ngram, transcribe
from d2v_plugin.asr.wer import cer, wer
from d2v_plugin.audio_frames import feature_lengths, parse_conv_spec

pytestmark = pytest.mark.slow

TINY_SPEC = "[(64, 10, 5)] + [(64, 3, 2)] * 4 + [(64,2,2)] + [(64,2,2)]"


@pytest.fixture(scope="module")
def ckpts(tiny_asr_checkpoints):
    """Pretrained (30 updates) and fine-tuned (30 updates) checkpoints, the pretrained copy the
    fine-tuning read deleted (the session fixture in conftest.py, shared with test_hf_export.py)."""
    return tiny_asr_checkpoints


def lines(path) -> list:
    return Path(path).read_text(encoding="utf-8").splitlines()


def manifest(corpus, split):
    root, *rows = lines(Path(corpus) / f"{split}.tsv")
    return root, [(r.split("\t")[0], int(r.split("\t")[1])) for r in rows]


@pytest.fixture(scope="module")
def decoded(ckpts, speech_corpus, tmp_path_factory):
    """d2v-infer in-process, one utterance per batch (no padding): (result, results dir)."""
    out = tmp_path_factory.mktemp("decoded")
    result = infer.main([str(ckpts["finetuned"]), "--data", str(speech_corpus), "--split", "test",
                         "--results-dir", str(out), "--batch-size", "1", "--cpu"])
    return result, out


def test_fixture_deleted_the_pretrained_checkpoint_and_the_finetuned_one_records_it(ckpts):
    from d2v_plugin.asr.checkpoint import read_state

    assert not ckpts["deleted_w2v"].exists()
    cfg = read_state(str(ckpts["finetuned"]))["cfg"]
    assert cfg["model"]["_name"] == "wav2vec_ctc"
    assert cfg["model"]["w2v_path"] == str(ckpts["deleted_w2v"])
    assert cfg["model"]["w2v_args"]["model"]["_name"] == "data2vec_multi"   # embedded config


def test_one_hypothesis_per_utterance_in_manifest_order(decoded, ckpts, speech_corpus):
    """Line i of every output file belongs to audio line i of test.tsv, although batches are
    sorted by length: checked against each utterance decoded on its own, in manifest order."""
    result, out = decoded
    root, rows = manifest(speech_corpus, "test")
    assert result.utterances == len(rows)
    assert lines(out / "ref.word-test.txt") == lines(Path(speech_corpus) / "test.wrd")
    assert lines(out / "ref.units-test.txt") == lines(Path(speech_corpus) / "test.ltr")
    hypo_units = lines(out / "hypo.units-test.txt")
    hypo_words = lines(out / "hypo.word-test.txt")
    assert len(hypo_units) == len(hypo_words) == len(rows)
    assert sorted(rows, key=lambda r: r[1]) != rows   # length order differs from manifest order

    from d2v_plugin.asr.checkpoint import load_model_and_task

    model, _, task = load_model_and_task(str(ckpts["finetuned"]), str(speech_corpus))
    symbols = task.target_dictionary.symbols
    expected = []
    with torch.inference_mode():
        for rel, _ in rows:
            wav, _ = sf.read(str(Path(root) / rel), dtype="float32")
            wav = torch.from_numpy(wav)
            wav = F.layer_norm(wav, wav.shape)[None]
            net_output = model(source=wav, padding_mask=torch.zeros_like(wav, dtype=torch.bool))
            best = model.get_normalized_probs(net_output, log_probs=True)[:, 0].argmax(-1).tolist()
            ids = [i for i, _ in itertools.groupby(best) if i != 0]
            expected.append(" ".join(symbols[i] for i in ids))
    assert hypo_units == expected
    assert len(set(expected)) > 1, "all hypotheses identical: the order check would be vacuous"


def test_reported_wer_and_cer_equal_the_scores_recomputed_from_the_files(decoded):
    result, out = decoded
    refs, hyps = lines(out / "ref.word-test.txt"), lines(out / "hypo.word-test.txt")
    assert result.wer == wer(refs, hyps) and result.cer == cer(refs, hyps)
    assert result.wer.ref_len == sum(len(r.split()) for r in refs)
    scores = json.loads((out / "scores-test.json").read_text())
    assert scores["wer"] == pytest.approx(result.wer.rate)
    assert scores["cer"] == pytest.approx(result.cer.rate)
    assert (scores["utterances"], scores["decoder"]) == (len(refs), "greedy")


def test_infer_in_a_fresh_process_without_the_pretrained_checkpoint(decoded, ckpts, speech_corpus, tmp_path):
    """python -m d2v_plugin.asr.infer, elsewhere, after the pretrained file was deleted: same
    hypotheses, and the printed WER is the recomputed one."""
    result, out = decoded
    assert not ckpts["deleted_w2v"].exists()
    proc = subprocess.run(
        [sys.executable, "-m", "d2v_plugin.asr.infer", str(ckpts["finetuned"]), "--data",
         str(speech_corpus), "--split", "test", "--results-dir", str(tmp_path / "r"),
         "--batch-size", "1", "--cpu", "--log-level", "WARNING"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert lines(tmp_path / "r" / "hypo.units-test.txt") == lines(out / "hypo.units-test.txt")
    refs, hyps = lines(tmp_path / "r" / "ref.word-test.txt"), lines(tmp_path / "r" / "hypo.word-test.txt")
    assert f"WER {wer(refs, hyps)}" in proc.stdout and f"CER {cer(refs, hyps)}" in proc.stdout


def test_padded_batches_keep_manifest_order(decoded, ckpts, speech_corpus, tmp_path):
    """Default batching (several utterances per batch, padded): still one line per
    utterance, references in manifest order, and the frame padding mask is honoured (an
    utterance that is the longest of its batch decodes as it does alone)."""
    result = infer.main([str(ckpts["finetuned"]), "--data", str(speech_corpus), "--split", "test",
                         "--results-dir", str(tmp_path), "--max-tokens", "400000", "--cpu"])
    assert result.utterances == len(manifest(speech_corpus, "test")[1])
    assert lines(tmp_path / "ref.word-test.txt") == lines(Path(speech_corpus) / "test.wrd")
    assert len(lines(tmp_path / "hypo.word-test.txt")) == result.utterances
    _, rows = manifest(speech_corpus, "test")
    longest = max(range(len(rows)), key=lambda i: rows[i][1])
    alone = lines(decoded[1] / "hypo.units-test.txt")[longest]
    assert lines(tmp_path / "hypo.units-test.txt")[longest] == alone


def test_transcribe_wav_files_equals_d2v_infer_greedy_output(decoded, ckpts, speech_corpus, tmp_path):
    """d2v-transcribe (the console script, another folder, no references anywhere) on WAV
    files given in a different order than the manifest: each transcript is d2v-infer's greedy
    hypothesis for that file (both --batch-size 1), in the order given."""
    _, out = decoded
    root, rows = manifest(speech_corpus, "test")
    hyp_words, hyp_units = lines(out / "hypo.word-test.txt"), lines(out / "hypo.units-test.txt")
    picked = [5, 0, 3, 1]
    wavs = [str(Path(root) / rows[i][0]) for i in picked]
    result = tmp_path / "t" / "transcripts.json"
    proc = subprocess.run([str(Path(sys.executable).with_name("d2v-transcribe")), str(ckpts["finetuned"]), *wavs,
                           "--batch-size", "1", "--cpu", "--format", "json", "--output", str(result)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(result.read_text())
    assert report["decoder"] == "greedy"
    assert [u["audio"] for u in report["utterances"]] == wavs
    assert [u["words"] for u in report["utterances"]] == [hyp_words[i] for i in picked]
    assert [u["units"] for u in report["utterances"]] == [hyp_units[i] for i in picked]
    assert len({hyp_units[i] for i in picked}) > 1, "identical hypotheses: the order check would be vacuous"


def test_transcribe_manifest_without_references_equals_d2v_infer(decoded, ckpts, speech_corpus, tmp_path, capsys):
    """--manifest of a split that has no .ltr/.wrd next to it, default batching on both sides:
    the text output is d2v-infer's hypotheses line for line."""
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(Path(speech_corpus) / "test.tsv", bare / "dev_other.tsv")
    root, rows = manifest(speech_corpus, "test")
    transcribe.main([str(ckpts["finetuned"]), "--manifest", str(bare / "dev_other.tsv"), "--cpu"])
    printed = capsys.readouterr().out.splitlines()
    reference = infer.main([str(ckpts["finetuned"]), "--data", str(speech_corpus), "--split", "test",
                            "--results-dir", str(tmp_path / "r"), "--cpu"])
    assert reference.utterances == len(printed) == len(rows)
    expected = [f"{Path(root) / rel}\t{words}" for (rel, _), words in zip(rows, lines(tmp_path / "r" / "hypo.word-test.txt"))]
    assert printed == expected


def test_transcribe_names_a_wrong_sample_rate_and_needs_input(ckpts, tmp_path):
    from d2v_plugin.console import UserInputError

    wav = tmp_path / "8k.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(UserInputError, match=r"8k.wav: sample rate 8000 Hz, the model needs 16000 Hz"):
        transcribe.main([str(ckpts["finetuned"]), str(wav), "--cpu"])
    with pytest.raises(UserInputError, match="AUDIO files or --manifest"):
        transcribe.main([str(ckpts["finetuned"]), "--cpu"])


def test_infer_rejects_a_pretrained_checkpoint(ckpts, speech_corpus, tmp_path):
    from d2v_plugin.console import UserInputError

    with pytest.raises(UserInputError, match="not a fine-tuned CTC model"):
        infer.main([str(ckpts["pretrained"]), "--data", str(speech_corpus), "--results-dir", str(tmp_path)])


def test_infer_with_lexicon_and_lm(ckpts, speech_corpus, tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder")
    arpa, lexicon = ngram.main([str(Path(speech_corpus) / "train.wrd"), "--out-dir", str(tmp_path / "lm"),
                                "--lexicon-words", str(Path(speech_corpus) / "test.wrd")])
    result = infer.main([str(ckpts["finetuned"]), "--data", str(speech_corpus), "--split", "test",
                         "--results-dir", str(tmp_path / "r"), "--cpu", "--lm", arpa,
                         "--lexicon", lexicon, "--beam", "20"])
    hyps = lines(tmp_path / "r" / "hypo.word-test.txt")
    assert len(hyps) == result.utterances
    vocabulary = {line.split("\t")[0] for line in lines(lexicon)}
    assert {w for h in hyps for w in h.split()} <= vocabulary      # only lexicon words
    assert json.loads((tmp_path / "r" / "scores-test.json").read_text())["decoder"] == "lexicon+lm beam"
    assert result.wer == wer(lines(tmp_path / "r" / "ref.word-test.txt"), hyps)


# ---- d2v-features ---------------------------------------------------------------------------
def frames_of(num_samples: int) -> int:
    return int(feature_lengths(num_samples, parse_conv_spec(TINY_SPEC)))


@pytest.mark.parametrize("layer", ["final", "top_k", "1", "-1"])
def test_feature_shapes_match_the_conv_frame_count(ckpts, speech_corpus, tmp_path, layer):
    result = extract_features.main([str(ckpts["pretrained"]), "--data", str(speech_corpus), "--split",
                                    "valid", "--out-dir", str(tmp_path), "--layer", layer, "--cpu"])
    _, rows = manifest(speech_corpus, "valid")
    index = lines(tmp_path / "features.tsv")
    assert index[0] == str(tmp_path.resolve())
    assert [r.split("\t")[3] for r in index[1:]] == [rel for rel, _ in rows]   # manifest order
    for (rel, n), row in zip(rows, index[1:]):
        name, t, d, _ = row.split("\t")
        assert name == rel.replace("/", "__")[:-len(".wav")] + ".npy"
        feats = np.load(tmp_path / name)
        assert feats.shape == (frames_of(n), 64) == (int(t), int(d))
        assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert len(result.files) == len(rows)


def test_top_k_instance_norm_uses_only_valid_frames(ckpts, speech_corpus, tmp_path):
    """With K=1 the top_k target is the last layer instance-normed over time; in padded
    batches the statistics must come from the utterance's valid frames only."""
    common = [str(ckpts["pretrained"]), "--data", str(speech_corpus), "--split", "valid", "--cpu",
              "--batch-size", "6"]   # same padded batches for both runs
    extract_features.main(common + ["--out-dir", str(tmp_path / "k1"), "--layer", "top_k", "--top-k", "1"])
    extract_features.main(common + ["--out-dir", str(tmp_path / "last"), "--layer", "-1"])
    for f in sorted((tmp_path / "k1").glob("*.npy")):
        y, raw = np.load(f), np.load(tmp_path / "last" / f.name).astype(np.float64)
        expected = (raw - raw.mean(0)) / np.sqrt(raw.var(0) + 1e-5)   # F.instance_norm's eps
        np.testing.assert_allclose(y, expected, atol=2e-3)
        assert np.abs(y.mean(0)).max() < 1e-4


def test_finetuned_checkpoint_features_equal_the_pretrained_encoders(ckpts, speech_corpus, tmp_path):
    """The tiny fine-tuning config freezes the encoder for its first 100 updates, so after 30
    the wav2vec_ctc checkpoint's encoder is the pretrained student: same features, read from
    the fine-tuned file alone (its pretrained file is deleted)."""
    common = ["--data", str(speech_corpus), "--split", "valid", "--layer", "final", "--cpu"]
    extract_features.main([str(ckpts["pretrained"]), "--out-dir", str(tmp_path / "pre"), *common])
    extract_features.main([str(ckpts["finetuned"]), "--out-dir", str(tmp_path / "ft"), *common])
    for f in sorted((tmp_path / "pre").glob("*.npy")):
        np.testing.assert_allclose(np.load(tmp_path / "ft" / f.name), np.load(f), atol=1e-5)


def test_console_scripts_are_installed():
    bindir = Path(sys.executable).parent
    for name in ("d2v-infer", "d2v-transcribe", "d2v-manifest", "d2v-labels", "d2v-features", "d2v-lm"):
        assert (bindir / name).exists(), f"{name}: run pip install -e {REPO}"
