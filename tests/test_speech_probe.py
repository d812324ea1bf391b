"""d2v-speech-probe: PER and CTC decoding on known cases, labels checked with the file named,
hidden states equal to the reference implementation's, the feature cache, and the command end
to end (a pretrained checkpoint beats random init of the same architecture)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_utils import REPO
from d2v_plugin.asr import probe as P
from d2v_plugin.asr.layer_features import hidden_states, load_upstream
from d2v_plugin.asr.phoneme_labels import (greedy_ctc_decode, phoneme_error_rate, read_dictionary,
                                           read_phonemes)
from d2v_plugin.console import UserInputError
from reference_fixture import ReferenceFixture

PROBE = str(Path(sys.executable).with_name("d2v-speech-probe"))
AUDIO_REF = ReferenceFixture("upstream_d2v2_audio", ("checkpoint.pt", "batch_source.npy", "batch_padding_mask.npy",
                                                     "feat_encoder_input.npy", "feat_block_outputs.npy"),
                             "audio", "speech probe", atol=1e-5)
IMAGE_REF = ReferenceFixture("upstream_d2v2_image", ("checkpoint.pt",), "image", "speech probe", atol=0)
FAST = P.Recipe(pr_steps=300, pr_lrs=(0.3,), sid_steps=100, sid_lrs=(0.1,))


# ---------------------------------------------------------------- pure functions


def test_per_known_cases():
    assert phoneme_error_rate([[1, 2, 3, 4]], [[1, 2, 3, 4]]).rate == 0.0
    assert phoneme_error_rate([[1, 2, 3, 4]], [[1, 9, 3]]).rate == 50.0  # 1 sub + 1 del
    assert phoneme_error_rate([[1, 2], [3, 4, 5, 6]], [[], [3, 4, 5, 6, 7, 8]]).errors == 4  # pooled: 4/6
    assert phoneme_error_rate([[1, 2], [3, 4, 5, 6]], [[], [3, 4, 5, 6, 7, 8]]).rate == pytest.approx(400 / 6)
    assert phoneme_error_rate([[10, 11]], [[1, 10, 11, 12, 13]]).rate == 150.0  # insertions can exceed 100


def test_greedy_ctc_merges_repeats_then_drops_blanks():
    def onehot(path, classes=5):
        return torch.nn.functional.one_hot(torch.tensor(path), classes).float()

    assert greedy_ctc_decode(onehot([0, 1, 1, 0, 1, 2, 2, 0])) == [1, 1, 2]
    assert greedy_ctc_decode(onehot([0, 0, 0])) == []
    assert greedy_ctc_decode(onehot([3, 3, 4, 4, 3])) == [3, 4, 3]


def test_label_files_errors_name_file_and_line(tmp_path):
    d = tmp_path / "dict.phn.txt"
    d.write_text("a 3\nb 1\n", encoding="utf-8")
    assert read_dictionary(str(d)) == ["a", "b"]
    phn = tmp_path / "x.phn"
    phn.write_text("a b\nb a a\n", encoding="utf-8")
    assert read_phonemes(str(phn), ["a", "b"], 2) == [[1, 2], [2, 1, 1]]
    with pytest.raises(UserInputError, match=r"x\.phn: 2 lines but the manifest has 3"):
        read_phonemes(str(phn), ["a", "b"], 3)
    phn.write_text("a b\nb zz a\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"x\.phn:2: phoneme\(s\) \['zz'\] not in the dictionary"):
        read_phonemes(str(phn), ["a", "b"], 2)
    d.write_text("a 3\nb\n", encoding="utf-8")
    with pytest.raises(UserInputError, match=r"dict\.phn\.txt:2: expected 'SYMBOL COUNT'"):
        read_dictionary(str(d))


# ---------------------------------------------------------------- upstreams


def test_reference_checkpoint_hidden_states_are_block_input_and_outputs():
    """The layers probed are exactly the reference implementation's block-0 input and block outputs."""
    up = load_upstream(str(AUDIO_REF.dir / "checkpoint.pt"))
    assert (up.family, len(up.blocks), up.normalize) == ("data2vec_multi", 4, True)
    states = hidden_states(up, AUDIO_REF.tensor("batch_source"), AUDIO_REF.tensor("batch_padding_mask"))
    assert len(states) == 5
    AUDIO_REF.assert_matches(states[0], "feat_encoder_input")
    AUDIO_REF.assert_matches(torch.stack(states[1:]), "feat_block_outputs")


def test_not_a_speech_checkpoint_is_refused_with_its_name(speech_corpus):
    ckpt = str(IMAGE_REF.dir / "checkpoint.pt")
    with pytest.raises(UserInputError, match=rf"{ckpt}: not a speech model"):
        P.main([ckpt, "--data", str(speech_corpus), "--cache-dir", ""])


def test_not_a_checkpoint_is_refused_with_its_name(tmp_path, speech_corpus):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a checkpoint")
    with pytest.raises(UserInputError, match=rf"{bogus}: not a readable fairseq checkpoint"):
        P.main([str(bogus), "--data", str(speech_corpus), "--cache-dir", ""])


# ---------------------------------------------------------------- corpus problems


def _corpus_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("wav"))  # the tsv root still points at src/wav
    return dst


@pytest.mark.parametrize("problem, expected", [
    ("no_phn", r"valid\.phn: phoneme labels not found \(this corpus has no phoneme labels"),
    ("unknown_phoneme", r"test\.phn:3: phoneme\(s\) \['QQ'\] not in the dictionary"),
    ("empty_split", r"valid\.tsv: no usable utterances"),
    ("no_dict", r"dict\.phn\.txt: phoneme dictionary not found"),
])
def test_bad_corpus_is_refused_before_extraction(problem, expected, speech_corpus, tmp_path):
    data = _corpus_copy(speech_corpus, tmp_path / "corpus")
    if problem == "no_phn":
        (data / "valid.phn").unlink()
    elif problem == "unknown_phoneme":
        lines = (data / "test.phn").read_text(encoding="utf-8").splitlines()
        lines[2] += " QQ"
        (data / "test.phn").write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif problem == "empty_split":
        root = (data / "valid.tsv").read_text().splitlines()[0]
        (data / "valid.tsv").write_text(root + "\n")
    else:
        (data / "dict.phn.txt").unlink()
    with pytest.raises(Exception, match=expected) as err:
        P.main(["/nonexistent/checkpoint.pt", "--data", str(data), "--cache-dir", ""])
    assert str(data) in str(err.value)


# ---------------------------------------------------------------- with a pretrained checkpoint


@pytest.mark.slow
def test_cache_is_reused_and_invalidated_when_the_checkpoint_changes(tiny_audio_pretrained, speech_corpus, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    shutil.copy(tiny_audio_pretrained, ckpt)
    cache = str(tmp_path / "cache")
    first = P.probe(str(ckpt), str(speech_corpus), cache_dir=cache, recipe=FAST, tasks=("sid",))
    assert first["cache"]["extracted_splits"] == 3 and first["cache"]["cached_splits"] == []
    again = P.probe(str(ckpt), str(speech_corpus), cache_dir=cache, recipe=FAST, tasks=("sid",))
    assert again["cache"]["cached_splits"] == ["train", "valid", "test"]
    assert again["sid"] == first["sid"]  # same features, same seeded heads

    state = torch.load(ckpt, weights_only=False)  # a "newer" checkpoint at the same path
    state["model"]["blocks.3.mlp.fc2.bias"] += 1.0
    torch.save(state, ckpt)
    changed = P.probe(str(ckpt), str(speech_corpus), cache_dir=cache, recipe=FAST, tasks=("sid",))
    assert changed["cache"]["extracted_splits"] == 3 and changed["checkpoint_sha256"] != first["checkpoint_sha256"]
    entries = sorted(Path(cache).glob("*.json"))
    assert len(entries) == 6
    feats = {json.loads(e.read_text())["checkpoint_sha256"]: np.load(str(e).replace(".json", ".feats.npy"))
             for e in entries if json.loads(e.read_text())["manifest"].endswith("test.tsv")}
    assert len(feats) == 2
    a, b = feats.values()
    assert a.shape == b.shape and not np.array_equal(a[:, 4], b[:, 4])  # the changed block's output
    assert np.array_equal(a[:, :4], b[:, :4])                          # the blocks before it: same


@pytest.mark.slow
def test_probe_command_pretrained_beats_random_init(tiny_audio_pretrained, speech_corpus, tmp_path):
    out = tmp_path / "probe.json"
    cmd = [PROBE, str(tiny_audio_pretrained), "--data", str(speech_corpus), "--compare-random",
           "--seeds", "1", "2", "--pr-steps", "400", "--pr-lrs", "0.1", "0.3", "--sid-steps", "100",
           "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| pretrained |" in proc.stdout and "| random init |" in proc.stdout
    assert "layer weights (input, block 1..4)" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["version"] == P.JSON_VERSION
    pretrained, random_init = doc["results"]
    assert (pretrained["model"], random_init["model"]) == ("pretrained", "random init")
    for r in (pretrained, random_init):
        assert (r["family"], r["num_layers"], r["dim"]) == ("data2vec_multi", 5, 64)
        assert len(r["pr"]["per"]["valid"]["runs"]) == 2 and set(r["pr"]["per"]) == {"valid", "test"}
        assert sum(r["pr"]["layer_weights"]) == pytest.approx(1.0)
        assert 0 <= r["sid"]["accuracy"]["test"]["mean"] <= 100
    print({k: (r["pr"]["per"]["valid"]["mean"], r["pr"]["per"]["test"]["mean"]) for k, r in
           (("pretrained", pretrained), ("random", random_init))})
    for split in ("valid", "test"):
        assert pretrained["pr"]["per"][split]["mean"] < random_init["pr"]["per"][split]["mean"] - 0.5, split


@pytest.mark.slow
def test_wav2vec2_checkpoint_layers_are_fairseqs_layer_results(speech_corpus, tmp_path):
    """A real fairseq wav2vec 2.0 checkpoint (benchmarks/configs/tiny_audio_w2v2.yaml, 2 updates):
    the probed layers are the encoder input and fairseq's own per-layer outputs, trained or not."""
    cmd = [str(Path(sys.executable).with_name("fairseq-hydra-train")), "--config-dir", str(REPO / "benchmarks" / "configs"),
           "--config-name", "tiny_audio_w2v2", f"task.data={speech_corpus}", f"checkpoint.save_dir={tmp_path}",
           "optimization.max_update=2", "dataset.max_tokens=96000", f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    source = torch.randn(2, 32000)
    padding = torch.zeros(2, 32000, dtype=torch.bool)
    padding[1, 20000:] = True
    for random_init in (False, True):
        up = load_upstream(str(tmp_path / "checkpoint_last.pt"), random_init=random_init)
        assert (up.family, len(up.blocks), up.normalize) == ("wav2vec2", 4, True)
        states = hidden_states(up, source, padding)
        frames = up.frames(torch.tensor([32000, 20000])).tolist()
        with torch.no_grad():
            out = up.model.extract_features(source, padding, mask=False)
        assert len(states) == 5 and states[0].shape[-1] == 64
        T = frames[0]
        for state, (x, _, _) in zip(states[1:], out["layer_results"]):
            assert torch.equal(state[:, :T], x.transpose(0, 1)[:, :T])
        assert torch.equal(states[-1][:, :T], out["x"])
