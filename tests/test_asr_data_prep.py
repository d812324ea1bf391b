"""d2v-manifest and d2v-labels on real (small) audio files: outputs and every bad-input case."""
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from d2v_plugin.asr import prepare_labels, prepare_manifest
from d2v_plugin.asr.prepare_labels import LabelError
from d2v_plugin.asr.prepare_manifest import ManifestBuildError

LENGTHS = {"b/utt2.wav": 4000, "a/utt1.wav": 3200, "a/deep/utt3.wav": 4800, "c/utt4.wav": 1600,
           "c/utt5.wav": 2400, "utt6.wav": 5600}


def write_wav(path: Path, n: int, fmt: str = "WAV") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(n).standard_normal(n).astype("float32") * 0.1
    sf.write(str(path), noise, 16000, format=fmt)


@pytest.fixture
def audio_dir(tmp_path):
    root = tmp_path / "audio"
    for rel, n in LENGTHS.items():
        write_wav(root / rel, n)
    write_wav(root / "a" / "other.flac", 1000, fmt="FLAC")
    (root / "a" / "notes.md").write_text("not audio")
    return root


def tsv_rows(path: Path):
    root, *rows = path.read_text().splitlines()
    return root, [tuple(r.split("\t")) for r in rows]


def run_cli(module, argv, monkeypatch, capsys):
    """The console script's entry point: exit status and stderr (it configures logging, so
    the root logger's handlers are put back afterwards)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "argv", [module.__name__, *argv])
    try:
        status = module.cli()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return status, capsys.readouterr().err


# ---- d2v-manifest ---------------------------------------------------------------------------
def test_manifest_root_first_sorted_relative_paths_and_frame_counts(audio_dir, tmp_path):
    result = prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "m"), "--valid-percent", "0"])
    assert set(result.paths) == {"train"} and not (tmp_path / "m" / "valid.tsv").exists()
    root, rows = tsv_rows(tmp_path / "m" / "train.tsv")
    assert root == str(audio_dir.resolve())
    assert [r[0] for r in rows] == sorted(LENGTHS)            # recursive, sorted, wav only
    assert {r[0]: int(r[1]) for r in rows} == LENGTHS
    flac = prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "f"), "--ext", "flac",
                                  "--valid-percent", "0"])
    assert tsv_rows(Path(flac.paths["train"]))[1] == [("a/other.flac", "1000")]


def test_manifest_split_is_seeded_and_partitions_the_files(audio_dir, tmp_path):
    def split(seed, dest):
        prepare_manifest.main([str(audio_dir), "--dest", str(dest), "--valid-percent", "0.5",
                               "--seed", str(seed)])
        return [[r[0] for r in tsv_rows(dest / f"{s}.tsv")[1]] for s in ("train", "valid")]

    train, valid = split(7, tmp_path / "a")
    assert split(7, tmp_path / "b") == [train, valid]           # same seed, same split
    assert sorted(train + valid) == sorted(LENGTHS) and not set(train) & set(valid)
    assert train == sorted(train) and valid == sorted(valid)
    assert any(split(seed, tmp_path / f"s{seed}") != [train, valid] for seed in range(5))


def test_manifest_unreadable_audio_is_named_or_skipped(audio_dir, tmp_path, monkeypatch, capsys, caplog):
    bad = audio_dir / "b" / "broken.wav"
    bad.write_bytes(b"RIFF garbage, not a wave file")
    with pytest.raises(ManifestBuildError, match=r"b/broken\.wav: not a readable audio file"):
        prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "m")])

    result = prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "m"), "--skip-bad",
                                    "--valid-percent", "0"])
    assert [rel for rel, _ in result.skipped] == ["b/broken.wav"]
    assert "skipped 1 unreadable of 7 files" in caplog.text
    assert [r[0] for r in tsv_rows(tmp_path / "m" / "train.tsv")[1]] == sorted(LENGTHS)

    # the console script reports it in one line
    status, err = run_cli(prepare_manifest, [str(audio_dir), "--dest", str(tmp_path / "m")], monkeypatch, capsys)
    assert status == 1 and "d2v-manifest: error:" in err and "broken.wav" in err


def test_manifest_argument_and_empty_folder_errors(audio_dir, tmp_path):
    with pytest.raises(ManifestBuildError, match=r"fraction in \[0, 1\], got 5"):
        prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "m"), "--valid-percent", "5"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestBuildError, match="no .wav files under"):
        prepare_manifest.main([str(tmp_path / "empty"), "--dest", str(tmp_path / "m")])
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        prepare_manifest.main([str(tmp_path / "nope"), "--dest", str(tmp_path / "m")])


# ---- d2v-labels -----------------------------------------------------------------------------
TEXTS = {"a/deep/utt3.wav": "it's a dog", "a/utt1.wav": "Hello  world", "b/utt2.wav": "THE CAT",
         "c/utt4.wav": "run", "c/utt5.wav": "a  b\n", "utt6.wav": "zoo keys"}


@pytest.fixture
def manifest(audio_dir, tmp_path):
    prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "m"), "--valid-percent", "0"])
    return tmp_path / "m" / "train.tsv"


def order(manifest):
    return [r[0] for r in tsv_rows(manifest)[1]]


def test_labels_from_transcripts_file_keyed_by_path_id_or_stem(manifest, tmp_path):
    keys = {"a/deep/utt3.wav": "a/deep/utt3.wav", "a/utt1.wav": "utt1", "b/utt2.wav": "b/utt2",
            "c/utt4.wav": "utt4", "c/utt5.wav": "c/utt5.wav", "utt6.wav": "utt6"}
    lines = [f"{keys[rel]}\t{text.strip()}" if i % 2 else f"{keys[rel]} {text.strip()}"
             for i, (rel, text) in enumerate(TEXTS.items())]
    (tmp_path / "trans.txt").write_text("\n".join(lines + ["unrelated/utt9 IGNORED"]) + "\n")
    result = prepare_labels.main([str(manifest), "--transcripts", str(tmp_path / "trans.txt")])
    expected = [" ".join(TEXTS[rel].upper().split()) for rel in order(manifest)]
    assert Path(result.wrd).read_text().splitlines() == expected
    assert Path(result.ltr).read_text().splitlines()[order(manifest).index("a/utt1.wav")] == \
        "H E L L O | W O R L D |"
    assert Path(result.ltr).read_text().splitlines()[order(manifest).index("a/deep/utt3.wav")] == \
        "I T ' S | A | D O G |"
    counts = dict(line.split() for line in Path(result.dict_path).read_text().splitlines())
    assert counts["|"] == str(sum(len(t.split()) for t in expected))
    assert counts["O"] == str(sum(t.count("O") for t in expected))
    assert prepare_labels.check_labels(str(manifest)) == len(TEXTS)


def test_labels_from_txt_files_beside_audio(manifest, audio_dir):
    for rel, text in TEXTS.items():
        (audio_dir / rel).with_suffix(".txt").write_text(text)
    result = prepare_labels.main([str(manifest)])
    assert Path(result.wrd).read_text().splitlines() == \
        [" ".join(TEXTS[rel].upper().split()) for rel in order(manifest)]


def test_labels_missing_transcript_names_the_audio_file(manifest, audio_dir, tmp_path, monkeypatch, capsys):
    for rel, text in TEXTS.items():
        if rel != "c/utt4.wav":
            (audio_dir / rel).with_suffix(".txt").write_text(text)
    with pytest.raises(LabelError, match=r"no transcript for c/utt4\.wav \(.*train\.tsv:\d+\): expected .*utt4\.txt"):
        prepare_labels.main([str(manifest)])
    (tmp_path / "t.txt").write_text("a/utt1.wav HELLO\n")
    with pytest.raises(LabelError, match=r"no transcript for a/deep/utt3\.wav"):
        prepare_labels.main([str(manifest), "--transcripts", str(tmp_path / "t.txt")])
    status, err = run_cli(prepare_labels, [str(manifest)], monkeypatch, capsys)
    assert status == 1 and "d2v-labels: error: no transcript for c/utt4.wav" in err


def test_labels_character_outside_alphabet_names_character_and_utterance(manifest, audio_dir):
    for rel, text in TEXTS.items():
        (audio_dir / rel).with_suffix(".txt").write_text("the cat, again" if rel == "b/utt2.wav" else text)
    with pytest.raises(LabelError, match=r"character ',' \(U\+002C\) in the transcript of b/utt2\.wav"):
        prepare_labels.main([str(manifest)])


def test_labels_with_existing_dict_rejects_unknown_symbols(manifest, audio_dir, tmp_path):
    for rel, text in TEXTS.items():
        (audio_dir / rel).with_suffix(".txt").write_text(text)
    (tmp_path / "dict.ltr.txt").write_text("| 10\nE 5\nA 4\n")
    with pytest.raises(LabelError, match=r"character 'I' .* of a/deep/utt3\.wav .* not in the dictionary"):
        prepare_labels.main([str(manifest), "--dict", str(tmp_path / "dict.ltr.txt"),
                             "--out-dir", str(tmp_path / "out")])
    full = "".join(f"{c} 1\n" for c in "|ABCDEFGHIJKLMNOPQRSTUVWXYZ'")
    (tmp_path / "dict.ltr.txt").write_text(full)
    result = prepare_labels.main([str(manifest), "--dict", str(tmp_path / "dict.ltr.txt"),
                                  "--out-dir", str(tmp_path / "out")])
    assert result.dict_path is None and not (tmp_path / "out" / "dict.ltr.txt").exists()


def test_labels_bad_transcript_files(manifest, audio_dir, tmp_path):
    (tmp_path / "dup.txt").write_text("utt1 A\nutt1 B\n")
    with pytest.raises(LabelError, match=r"dup\.txt:2: duplicate transcript key 'utt1' \(first on line 1\)"):
        prepare_labels.main([str(manifest), "--transcripts", str(tmp_path / "dup.txt")])
    write_wav(audio_dir / "d" / "utt1.wav", 1000)          # a second utt1
    prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "m"), "--valid-percent", "0"])
    (tmp_path / "ids.txt").write_text("".join(f"{Path(r).stem} X\n" for r in TEXTS))
    with pytest.raises(LabelError, match=r"utterance id 'utt1' is ambiguous, it names a/utt1\.wav, d/utt1\.wav"):
        prepare_labels.main([str(manifest), "--transcripts", str(tmp_path / "ids.txt")])
    (tmp_path / "empty.txt").write_text("".join(f"{r} {'' if r == 'utt6.wav' else 'X'}\n" for r in TEXTS)
                                        + "d/utt1.wav X\n")
    with pytest.raises(LabelError, match=r"empty transcript for utt6\.wav"):
        prepare_labels.main([str(manifest), "--transcripts", str(tmp_path / "empty.txt")])


def test_check_reports_label_manifest_count_mismatch_and_unknown_symbols(manifest, audio_dir, tmp_path,
                                                                         monkeypatch, capsys):
    for rel, text in TEXTS.items():
        (audio_dir / rel).with_suffix(".txt").write_text(text)
    result = prepare_labels.main([str(manifest)])
    ltr = Path(result.ltr)
    lines = ltr.read_text().splitlines()
    ltr.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(LabelError, match=rf"train\.ltr has {len(TEXTS) - 1} lines but .*train\.tsv lists {len(TEXTS)} utterances"):
        prepare_labels.check_labels(str(manifest))
    status, err = run_cli(prepare_labels, [str(manifest), "--check"], monkeypatch, capsys)
    assert status == 1 and "lines but" in err
    ltr.write_text("\n".join(lines[:-1] + ["Q |"]) + "\n")
    assert "Q" not in Path(result.dict_path).read_text().split()
    with pytest.raises(LabelError, match=r"symbol 'Q' in .*train\.ltr for utt6\.wav .* is not in the dictionary"):
        prepare_labels.check_labels(str(manifest))


def test_manifest_name_writes_one_named_split_of_every_file(audio_dir, tmp_path):
    """--name dev_other: the LibriSpeech dev-other folder becomes dev_other.tsv (what the base
    fine-tuning configs validate on), with the same lines as an unsplit train.tsv."""
    whole = prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "a"), "--valid-percent", "0"])
    named = prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "b"), "--name", "dev_other"])
    assert list(named.paths) == ["dev_other"] and sorted(p.name for p in (tmp_path / "b").iterdir()) == ["dev_other.tsv"]
    assert (tmp_path / "b" / "dev_other.tsv").read_text() == Path(whole.paths["train"]).read_text()
    assert named.counts == {"dev_other": whole.counts["train"]}
    with pytest.raises(ManifestBuildError, match="leave --valid-percent out"):
        prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "c"), "--name", "dev_other",
                               "--valid-percent", "0.1"])
    with pytest.raises(ManifestBuildError, match="split name"):
        prepare_manifest.main([str(audio_dir), "--dest", str(tmp_path / "c"), "--name", "dev_other.tsv"])
