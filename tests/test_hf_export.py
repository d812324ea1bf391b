"""d2v-export-hf: data2vec 2.0 checkpoints as transformers models (docs/huggingface.md).

Every exported folder is run in a FRESH interpreter that cannot import fairseq or d2v_plugin
and whose ``torch.load`` raises (tests/hf_fresh_process.py): the last hidden state and every
hidden state (context encoder output, then each block's output) must equal what the fairseq
model's ``extract_features`` computes within ``ATOL``, padded batches included.

Expected values: the arrays the reference implementation recorded in the three reference
fixtures (its own fairseq ``extract_features``), and our fairseq model's outputs on checkpoints
our tests train (computed here, in the pytest process, with hooks on the same modules).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from reference_fixture import ReferenceFixture

ATOL = 1e-5
FRESH_SCRIPT = Path(__file__).with_name("hf_fresh_process.py")
ALLOWED_SUFFIXES = {".json", ".py", ".safetensors"}

AUDIO = ReferenceFixture("upstream_d2v2_audio", ("checkpoint.pt", "batch_source.npy", "feat_x.npy"),
                         "audio", "hf audio", ATOL)
IMAGE = ReferenceFixture("upstream_d2v2_image", ("checkpoint_fairseq.pt", "batch_source.npy", "feat_x.npy"),
                         "image", "hf image", ATOL)
TEXT = ReferenceFixture("upstream_d2v2_text", ("checkpoint_fairseq.pt", "batch_source.npy", "feat_x.npy"),
                        "text", "hf text", ATOL)


# ---- helpers -------------------------------------------------------------------------------
def run_fresh(cases: Dict[str, Dict], workdir: Path) -> Dict:
    """Run the cases in a fresh interpreter (no fairseq, no d2v_plugin, no pickle); its RESULT."""
    path = workdir / "cases.json"
    path.write_text(json.dumps(cases))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(FRESH_SCRIPT), str(path)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"fresh process failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def save_case(path: Path, source: torch.Tensor, attention_mask: Optional[torch.Tensor], x,
              hidden, padding_mask) -> str:
    arrays = {"input": source.numpy(), "x": np.asarray(x, dtype=np.float32)}
    if attention_mask is not None:
        arrays["attention_mask"] = attention_mask.long().numpy()
    for i, h in enumerate(hidden):
        arrays[f"hidden_{i}"] = np.asarray(h, dtype=np.float32)
    if padding_mask is not None and bool(np.asarray(padding_mask).any()):
        arrays["padding_mask"] = np.asarray(padding_mask, dtype=bool)
    np.savez(path, **arrays)
    return str(path)


def fairseq_features(model, source: torch.Tensor, padding_mask: Optional[torch.Tensor]):
    """Our fairseq model's extract_features (extra tokens kept): (x, [context output, block
    outputs...], padding mask), captured with hooks on the context encoder and the blocks."""
    encoder = model.modality_encoders[model.modality]
    captured: Dict = {"blocks": {}}
    hooks = [encoder.context_encoder.register_forward_hook(lambda _m, _i, out: captured.__setitem__("ctx", out))]
    hooks += [block.register_forward_hook(lambda _m, _i, out, k=k: captured["blocks"].__setitem__(k, out[0]))
              for k, block in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            res = model.extract_features(source, padding_mask=padding_mask, mask=False, remove_extra_tokens=False)
    finally:
        for hook in hooks:
            hook.remove()
    hidden = [captured["ctx"]] + [captured["blocks"][k] for k in range(len(model.blocks))]
    padding = res["padding_mask"]
    return res["x"].numpy(), [h.numpy() for h in hidden], None if padding is None else padding.numpy()


def assert_close(result: Dict, depth: int, label: str) -> None:
    print(f"[{label}] last_hidden_state {result['last_hidden_state']:.3g}, hidden_states "
          f"{['%.3g' % d for d in result['hidden_states']]}")
    assert result["last_hidden_state"] <= ATOL, result
    assert result["num_hidden_states"] == depth + 1, result
    assert all(d <= ATOL for d in result["hidden_states"]), result
    assert result["padding_mask_equal"], result


def folder_has_no_pickle(folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors" in files and "config.json" in files and "modeling_data2vec2.py" in files, files
    assert all(Path(f).suffix in ALLOWED_SUFFIXES for f in files), files


def audio_batch(wavs, normalize: bool = True):
    """Waveforms -> (source (B, S) zero-padded, padding mask (B, S)), each normalised like the tasks do."""
    rows = []
    for path in wavs:
        wav, _ = sf.read(path, dtype="float32")
        w = torch.from_numpy(wav)
        rows.append(F.layer_norm(w, w.shape) if normalize else w)
    length = max(len(r) for r in rows)
    source = torch.zeros(len(rows), length)
    padding = torch.ones(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        source[i, :len(r)] = r
        padding[i, :len(r)] = False
    return source, padding


def needs_ffmpeg() -> None:
    if not shutil.which("ffmpeg"):
        pytest.skip("transformers' ASR pipeline decodes audio files with ffmpeg: not on PATH (make system-deps)")


def manifest_wavs(corpus: Path, split: str):
    root, *rows = (corpus / f"{split}.tsv").read_text().splitlines()
    return [str(Path(root) / r.split("\t")[0]) for r in rows if r.strip()]


# ---- the reference fixtures ----------------------------------------------------------------
@pytest.fixture(scope="module")
def reference_exports(tmp_path_factory):
    """The three reference checkpoints exported and run in one fresh process."""
    from d2v_plugin.hf.export import export

    work = tmp_path_factory.mktemp("hf_reference")
    folders = {
        "audio": export(str(AUDIO.dir / "checkpoint.pt"), str(work / "audio")),
        "image": export(str(IMAGE.dir / "checkpoint_fairseq.pt"), str(work / "image")),
        "image_model_only": export(str(IMAGE.dir / "checkpoint.pt"), str(work / "image_model_only")),
        "text": export(str(TEXT.dir / "checkpoint_fairseq.pt"), str(work / "text")),
    }
    cases = {}
    blocks = AUDIO.array("feat_block_outputs")
    source, pad = AUDIO.tensor("batch_source"), AUDIO.tensor("batch_padding_mask")
    cases["audio_padded"] = {"kind": "model", "folder": str(folders["audio"]), "input_name": "input_values",
                             "npz": save_case(work / "audio_padded.npz", source, ~pad, AUDIO.array("feat_x"),
                                              [AUDIO.array("feat_encoder_input"), *blocks],
                                              AUDIO.array("feat_padding_mask"))}
    cases["audio_row0_alone"] = {"kind": "model", "folder": str(folders["audio"]), "input_name": "input_values",
                                 "npz": save_case(work / "audio_row0.npz", source[:1], None,
                                                  AUDIO.array("feat_nopad0_x"), [], None)}
    for name in ("image", "image_model_only"):
        cases[name] = {"kind": "model", "folder": str(folders[name]), "input_name": "pixel_values",
                       "npz": save_case(work / f"{name}.npz", IMAGE.tensor("batch_source"), None,
                                        IMAGE.array("feat_x_with_extra_tokens"),
                                        [IMAGE.array("feat_encoder_input"), *IMAGE.array("feat_block_outputs")],
                                        None)}
    text_hidden = [TEXT.array("feat_encoder_input"), *TEXT.array("feat_block_outputs")]
    tokens, text_pad = TEXT.tensor("batch_source"), TEXT.tensor("batch_padding_mask")
    cases["text_attention_mask"] = {
        "kind": "model", "folder": str(folders["text"]), "input_name": "input_ids",
        "npz": save_case(work / "text_mask.npz", tokens, ~text_pad, TEXT.array("feat_x"), text_hidden,
                         TEXT.array("feat_padding_mask"))}
    cases["text_pad_tokens"] = {
        "kind": "model", "folder": str(folders["text"]), "input_name": "input_ids",
        "npz": save_case(work / "text_pad.npz", tokens, None, TEXT.array("feat_x"), text_hidden,
                         TEXT.array("feat_padding_mask"))}
    return folders, run_fresh(cases, work)


def test_reference_audio_export_equals_fairseq_features_padded_batch(reference_exports):
    _, results = reference_exports
    assert results["audio_padded"]["class"] == "Data2Vec2Model"
    assert_close(results["audio_padded"], 4, "audio padded")


def test_reference_audio_export_equals_fairseq_features_row_alone(reference_exports):
    _, results = reference_exports
    r = results["audio_row0_alone"]
    print(f"[audio row 0 alone] last_hidden_state {r['last_hidden_state']:.3g}")
    assert r["last_hidden_state"] <= ATOL and r["padding_mask_equal"], r


@pytest.mark.parametrize("case", ["image", "image_model_only"])
def test_reference_image_export_equals_fairseq_features_cls_first(reference_exports, case):
    _, results = reference_exports
    assert_close(results[case], 2, case)


@pytest.mark.parametrize("case", ["text_attention_mask", "text_pad_tokens"])
def test_reference_text_export_equals_fairseq_features_padded_batch(reference_exports, case):
    _, results = reference_exports
    assert_close(results[case], 2, case)


def test_fresh_process_imported_neither_fairseq_nor_d2v_plugin_nor_torchaudio(reference_exports):
    _, results = reference_exports
    assert results["imported"] == [], results["imported"]


def test_exported_folder_holds_no_pickle_and_safetensors_hold_every_weight(reference_exports):
    from safetensors.torch import load_file

    from d2v_plugin.hf import Data2Vec2Config, Data2Vec2Model

    folders, _ = reference_exports
    for folder in folders.values():
        folder_has_no_pickle(folder)
        config = json.loads((folder / "config.json").read_text())
        assert config["auto_map"]["AutoModel"] == "modeling_data2vec2.Data2Vec2Model"
        tensors = load_file(str(folder / "model.safetensors"))          # no pickle involved
        expected = Data2Vec2Model(Data2Vec2Config(**{k: v for k, v in config.items() if k != "auto_map"}))
        assert set(tensors) == set(expected.state_dict()), folder
        assert not any(k.startswith("_ema") or ".decoder." in k for k in tensors)


def test_registered_auto_classes_load_without_trust_remote_code(reference_exports):
    """Where d2v_plugin is installed, ``import d2v_plugin.hf`` is enough: the folder's copy
    of the code is not executed."""
    import d2v_plugin.hf  # noqa: F401  (registers data2vec2_multi with the Auto classes)
    from transformers import AutoModel

    from d2v_plugin.hf.modeling_data2vec2 import Data2Vec2Model

    folders, _ = reference_exports
    model = AutoModel.from_pretrained(str(folders["text"])).eval()
    assert type(model) is Data2Vec2Model
    with torch.no_grad():
        out = model(input_ids=TEXT.tensor("batch_source"))
    TEXT.assert_matches(out.last_hidden_state, "feat_x", ATOL)


# ---- our own model with the options the fixtures do not cover -----------------------------
def test_export_of_prenet_per_layer_alibi_pre_ln_group_norm_audio_model(tmp_path):
    """A tiny audio model of ours with a prenet block, per-layer ALiBi scales (randomised),
    pre-LN blocks (+ final norm), a CLS token and the group-norm feature encoder."""
    from omegaconf import OmegaConf

    from d2v_plugin.hf.export import export
    from tiny_model import tiny_model

    torch.manual_seed(0)
    model = tiny_model(**{"layer_norm_first": True, "modalities.audio.prenet_depth": 1,
                          "modalities.audio.learned_alibi_scale_per_layer": True,
                          "modalities.audio.num_extra_tokens": 1,
                          "modalities.audio.extractor_mode": "default"}).eval()
    with torch.no_grad():
        scale = model.modality_encoders["AUDIO"].alibi_scale
        scale.copy_(torch.rand_like(scale) * 2)
    ckpt = tmp_path / "ours.pt"
    torch.save({"cfg": {"model": {**OmegaConf.to_container(model.cfg, enum_to_str=True), "_name": "data2vec_multi"}},
                "model": model.state_dict(), "args": None}, ckpt)
    folder = export(str(ckpt), str(tmp_path / "hf"))
    torch.manual_seed(1)
    source = torch.randn(2, 4000)
    pad = torch.zeros(2, 4000, dtype=torch.bool)
    pad[1, 2500:] = True
    source[pad] = 0
    x, hidden, padding = fairseq_features(model, source, pad)
    assert padding is not None and padding.any() and not padding[:, 0].any()  # CLS never padded
    results = run_fresh({"ours": {"kind": "model", "folder": str(folder), "input_name": "input_values",
                                  "npz": save_case(tmp_path / "ours.npz", source, ~pad, x, hidden, padding)}},
                        tmp_path)
    assert_close(results["ours"], 2, "ours: prenet, per-layer alibi, pre-LN, CLS, group norm")
    assert results["imported"] == []


def test_export_keeps_conv_pos_zero_padding(tmp_path):
    """With ``conv_pos_zero_padding`` the exported model, like ours, gives a padded row the
    features it has alone (tests/test_audio_padding.py)."""
    from fairseq import checkpoint_utils

    from d2v_plugin.hf.export import export

    def zero_padding(state):
        state["cfg"]["model"]["modalities"]["audio"]["conv_pos_zero_padding"] = True
    ckpt = _modified_audio_fixture(tmp_path, zero_padding)
    folder = export(str(ckpt), str(tmp_path / "hf"))
    assert json.loads((Path(folder) / "config.json").read_text())["conv_pos_zero_padding"] is True
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)])
    model = models[0].eval()
    source, pad = AUDIO.tensor("batch_source"), AUDIO.tensor("batch_padding_mask")
    x, hidden, padding = fairseq_features(model, source, pad)
    assert not np.allclose(x, AUDIO.array("feat_x"), atol=1e-2)  # not the reference's leaky numbers
    results = run_fresh({"zero_padding": {"kind": "model", "folder": str(folder), "input_name": "input_values",
                                          "npz": save_case(tmp_path / "zp.npz", source, ~pad, x, hidden, padding)}},
                        tmp_path)
    assert_close(results["zero_padding"], 4, "audio, conv_pos_zero_padding")


# ---- refusals ------------------------------------------------------------------------------
def _modified_audio_fixture(tmp_path: Path, edit) -> Path:
    state = torch.load(AUDIO.dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    edit(state)
    path = tmp_path / "modified.pt"
    torch.save(state, path)
    return path


REFUSED = [
    ("modalities.audio.learned_alibi", "True",
     lambda s: s["cfg"]["model"]["modalities"]["audio"].__setitem__("learned_alibi", True)),
    ("modalities.audio.conv_pos_pre_ln", "True",
     lambda s: s["cfg"]["model"]["modalities"]["audio"].__setitem__("conv_pos_pre_ln", True)),
    ("supported_modality", "'SPEECH'", lambda s: s["cfg"]["model"].__setitem__("supported_modality", "SPEECH")),
]


@pytest.mark.parametrize("option, value, edit", REFUSED, ids=[r[0] for r in REFUSED])
def test_export_refuses_an_unsupported_option_naming_it(tmp_path, option, value, edit):
    from d2v_plugin.hf.export import UnsupportedCheckpoint, export

    with pytest.raises(UnsupportedCheckpoint) as error:
        export(str(_modified_audio_fixture(tmp_path, edit)), str(tmp_path / "out"))
    assert f"{option}={value}" in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.slow
def test_export_cli_reports_a_refusal_in_one_line(tmp_path):
    option, value, edit = REFUSED[0]
    checkpoint = _modified_audio_fixture(tmp_path, edit)
    exe = Path(sys.executable).with_name("d2v-export-hf")
    proc = subprocess.run([str(exe), str(checkpoint), str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"d2v-export-hf: error: {checkpoint}: {option}={value}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_export_refuses_weights_that_do_not_map(tmp_path):
    from d2v_plugin.hf.export import UnsupportedCheckpoint, export

    def add_key(state):
        state["model"]["modality_encoders.AUDIO.alibi_bias"] = torch.zeros(4, 49, 49)

    with pytest.raises(UnsupportedCheckpoint, match="alibi_bias"):
        export(str(_modified_audio_fixture(tmp_path, add_key)), str(tmp_path / "out"))


# ---- the CTC tokenizer decodes like d2v-infer ----------------------------------------------
def test_ctc_tokenizer_decodes_exactly_like_d2v_infer_greedy(tmp_path):
    """Random frame labels over a letter dictionary (blank <s>, <pad>, </s>, <unk>, |, letters):
    the exported tokenizer's decode equals d2v-infer's collapse -> skip specials -> words."""
    from fairseq.data import Dictionary

    from d2v_plugin.asr.ctc import collapse, ids_to_units, units_to_words
    from d2v_plugin.hf.export import write_processor

    dictionary = Dictionary()
    for symbol in "| E T A O N I H S R D L U".split():
        dictionary.add_symbol(symbol)
    write_processor(tmp_path, {"task_state": {"target_dictionary": dictionary}}, normalize=True,
                    sample_rate=16000, where="test")
    folder_has_no_pickle_processor = sorted(p.name for p in tmp_path.iterdir())
    assert all(Path(f).suffix in ALLOWED_SUFFIXES for f in folder_has_no_pickle_processor)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), trust_remote_code=True)
    symbols = list(dictionary.symbols)
    specials = {dictionary.bos(), dictionary.pad(), dictionary.eos()}
    rng = np.random.default_rng(0)
    for trial in range(300):
        # few distinct labels so that runs, blanks between repeats and specials all occur
        pool = rng.choice(len(symbols), size=5, replace=False).tolist() + [dictionary.bos()] * 3
        frames = [int(rng.choice(pool)) for _ in range(int(rng.integers(0, 40)))]
        expected = units_to_words(ids_to_units(collapse(frames, dictionary.bos()), symbols, specials))
        assert tokenizer.decode(frames) == expected, (frames, expected)


# ---- checkpoints our tests train: pretrained audio, CTC fine-tuned, text -------------------
@pytest.fixture(scope="module")
def trained_exports(tiny_asr_checkpoints, text_pipeline_prepared, text_pipeline_trained, speech_corpus,
                    tmp_path_factory):
    import d2v_plugin  # noqa: F401
    from fairseq import checkpoint_utils

    from d2v_plugin.asr import infer
    from d2v_plugin.hf.export import export

    work = tmp_path_factory.mktemp("hf_trained")
    cases, expected = {}, {}
    wavs = manifest_wavs(speech_corpus, "test")

    # pretrained audio: padded batch of two utterances of different lengths
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([str(tiny_asr_checkpoints["pretrained"])])
    model = models[0].eval()
    source, pad = audio_batch(wavs[:2])
    assert pad.any()
    x, hidden, padding = fairseq_features(model, source, pad)
    folder = export(str(tiny_asr_checkpoints["pretrained"]), str(work / "audio"))
    cases["audio"] = {"kind": "model", "folder": str(folder), "input_name": "input_values",
                      "npz": save_case(work / "audio.npz", source, ~pad, x, hidden, padding)}
    expected["audio_depth"] = len(model.blocks)

    # CTC fine-tuned: encoder hidden states and logits on the padded batch, and the pipeline
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(tiny_asr_checkpoints["finetuned"])], arg_overrides={"data": str(speech_corpus)})
    ctc = models[0].eval()
    encoder = ctc.w2v_encoder.w2v_model
    x, hidden, padding = fairseq_features(encoder, source, pad)
    with torch.no_grad():
        net_output = ctc(source=source, padding_mask=pad)
        logits = ctc.get_logits(net_output).transpose(0, 1)                 # (B, T, V)
    ctc_folder = export(str(tiny_asr_checkpoints["finetuned"]), str(work / "ctc"))
    cases["ctc_encoder"] = {"kind": "model", "folder": str(ctc_folder), "input_name": "input_values",
                            "npz": save_case(work / "ctc_encoder.npz", source, ~pad, x, hidden, padding)}
    np.savez(work / "ctc_logits.npz", input=source.numpy(), attention_mask=(~pad).long().numpy(),
             logits=logits.numpy())
    cases["ctc_logits"] = {"kind": "ctc", "folder": str(ctc_folder), "npz": str(work / "ctc_logits.npz")}
    if shutil.which("ffmpeg"):  # the pipeline decodes file paths with ffmpeg
        cases["pipeline"] = {"kind": "pipeline", "folder": str(ctc_folder), "wavs": wavs}
    decoded = work / "decoded"
    infer.main([str(tiny_asr_checkpoints["finetuned"]), "--data", str(speech_corpus), "--split", "test",
                "--results-dir", str(decoded), "--batch-size", "1", "--cpu"])
    expected["d2v_infer"] = (decoded / "hypo.word-test.txt").read_text(encoding="utf-8").splitlines()

    # text: a padded batch of two token rows of different lengths
    run_dir, _, _ = text_pipeline_trained
    text_ckpt = run_dir / "ckpt" / "checkpoint_last.pt"
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(text_ckpt)])
    text_model = models[0].eval()
    d = task.source_dictionary
    rows = [[d.bos()] + list(range(d.nspecial, d.nspecial + 9)) + [d.eos()],
            [d.bos()] + list(range(d.nspecial + 20, d.nspecial + 25)) + [d.eos()]]
    tokens = torch.full((2, 11), d.pad(), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, :len(r)] = torch.tensor(r)
    x, hidden, padding = fairseq_features(text_model, tokens, tokens.eq(d.pad()))
    text_folder = export(str(text_ckpt), str(work / "text"))
    cases["text"] = {"kind": "model", "folder": str(text_folder), "input_name": "input_ids",
                     "npz": save_case(work / "text.npz", tokens, tokens.ne(d.pad()), x, hidden, padding)}
    expected["text_depth"] = len(text_model.blocks)
    return {"folders": {"audio": folder, "ctc": ctc_folder, "text": text_folder}, "wavs": wavs,
            "results": run_fresh(cases, work), "expected": expected}


@pytest.mark.slow
def test_trained_audio_export_equals_fairseq_features_padded_batch(trained_exports):
    r = trained_exports["results"]
    assert_close(r["audio"], trained_exports["expected"]["audio_depth"], "trained audio")


@pytest.mark.slow
def test_trained_text_export_equals_fairseq_features_padded_batch(trained_exports):
    r = trained_exports["results"]
    assert_close(r["text"], trained_exports["expected"]["text_depth"], "trained text")


@pytest.mark.slow
def test_finetuned_ctc_export_equals_fairseq_encoder_and_logits(trained_exports):
    r = trained_exports["results"]
    assert_close(r["ctc_encoder"], trained_exports["expected"]["audio_depth"], "ctc encoder")
    logits = r["ctc_logits"]
    print(f"[ctc logits] max abs diff {logits['logits']:.3g}")
    assert logits["class"] == "Data2Vec2ForCTC"
    assert logits["same_shape"] and logits["same_finite"] and logits["same_argmax"], logits
    assert logits["logits"] <= ATOL, logits


@pytest.mark.slow
def test_asr_pipeline_on_wav_files_prints_exactly_what_d2v_infer_prints(trained_exports):
    needs_ffmpeg()
    texts = trained_exports["results"]["pipeline"]["texts"]
    reference = trained_exports["expected"]["d2v_infer"]
    print(f"[pipeline] {sum(bool(t) for t in texts)}/{len(texts)} non-empty, e.g. {texts[:3]}")
    assert texts == reference
    assert trained_exports["results"]["imported"] == []
    folder_has_no_pickle(trained_exports["folders"]["ctc"])
    names = {p.name for p in trained_exports["folders"]["ctc"].iterdir()}
    assert {"vocab.json", "tokenizer_config.json", "preprocessor_config.json", "processing_data2vec2.py"} <= names


@pytest.mark.slow
def test_asr_pipeline_without_trust_remote_code_where_d2v_plugin_is_installed(trained_exports):
    """``import d2v_plugin.hf`` registers the processor classes too: the installed code decodes,
    from a path and from an array, as d2v-infer does."""
    import d2v_plugin.hf  # noqa: F401
    from transformers import pipeline

    from d2v_plugin.hf.processing_data2vec2 import Data2Vec2CTCTokenizer

    needs_ffmpeg()
    asr = pipeline("automatic-speech-recognition", model=str(trained_exports["folders"]["ctc"]))
    assert type(asr.tokenizer) is Data2Vec2CTCTokenizer
    reference = trained_exports["expected"]["d2v_infer"]
    for path, expected in list(zip(trained_exports["wavs"], reference))[:3]:
        wav, rate = sf.read(path, dtype="float32")
        assert asr(path)["text"] == expected
        assert asr({"raw": wav, "sampling_rate": rate})["text"] == expected


def test_export_refuses_a_non_empty_folder_and_overwrite_replaces_an_earlier_ctc_export(tmp_path):
    from d2v_plugin.console import UserInputError
    from d2v_plugin.hf.export import export

    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("mine")
    (out / "vocab.json").write_text("{}")                     # left by an earlier CTC export
    with pytest.raises(UserInputError, match="--overwrite"):
        export(str(AUDIO.dir / "checkpoint.pt"), str(out))
    export(str(AUDIO.dir / "checkpoint.pt"), str(out), overwrite=True)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors", "modeling_data2vec2.py"], names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # staging removed
