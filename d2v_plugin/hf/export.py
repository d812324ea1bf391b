"""Export a ``data2vec_multi`` or ``wav2vec_ctc`` checkpoint as a transformers model (``d2v-export-hf``).

Example::

    d2v-export-hf checkpoints/pretrain/checkpoint_last.pt hf/d2v2-audio
    d2v-export-hf checkpoints/finetune_tiny/checkpoint_best.pt hf/d2v2-ctc   # + feature extractor, tokenizer

The folder holds ``config.json`` (with ``auto_map``), ``model.safetensors`` and the model code
(``modeling_data2vec2.py``; for CTC also ``processing_data2vec2.py``, ``vocab.json``,
``tokenizer_config.json``, ``preprocessor_config.json``), and loads with
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` where neither fairseq nor
d2v_plugin is installed. Only the student encoder is written (plus the CTC head): not the EMA
teacher, not the pretraining decoder. Options the exported code does not implement are
refused by name rather than silently exported as a model that computes something else.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch

from .. import console

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
MODEL_FILE = "modeling_data2vec2.py"
PROCESSING_FILE = "processing_data2vec2.py"
CTC_PREFIX, HEAD_PREFIX = "w2v_encoder.w2v_model.", "w2v_encoder.proj."
# Reference (fairseq examples/data2vec) options our encoder does not implement, with the only
# value under which they leave the encoder's output unchanged.
REFERENCE_ONLY = {"learned_alibi": False}


class UnsupportedCheckpoint(console.UserInputError):
    """The checkpoint uses an option the exported model would not reproduce."""


def _container(cfg) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return copy.deepcopy(cfg)


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The checkpoint as fairseq loads it (old ``args`` checkpoints upgraded); model-only
    files (``{"cfg": {"model": ...}, "model": ...}``, as some reference fixtures) as they are."""
    import d2v_plugin  # noqa: F401  (allow-lists fairseq's checkpoint types for weights_only)
    from fairseq import checkpoint_utils

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint {path}")
    try:
        return checkpoint_utils.load_checkpoint_to_cpu(path)
    except KeyError:  # not a training checkpoint: no optimizer history to upgrade
        return torch.load(path, map_location="cpu", weights_only=True)


def resolved_model_cfg(model_cfg: Dict[str, Any], where: str) -> Dict[str, Any]:
    """The checkpoint's ``data2vec_multi`` config over our defaults; refuses what the exported
    code cannot reproduce, naming the option."""
    from omegaconf import OmegaConf

    from ..models.config import Data2Vec2Config

    defaults = OmegaConf.to_container(OmegaConf.structured(Data2Vec2Config), enum_to_str=True)
    modality = str(model_cfg.get("supported_modality", defaults["supported_modality"])).upper()
    if modality not in ("AUDIO", "IMAGE", "TEXT"):
        raise UnsupportedCheckpoint(f"{where}: supported_modality={modality!r} cannot be exported")
    for name, neutral in REFERENCE_ONLY.items():
        value = (model_cfg.get("modalities") or {}).get(modality.lower(), {}).get(name, neutral)
        if value != neutral:
            raise UnsupportedCheckpoint(f"{where}: modalities.{modality.lower()}.{name}={value} is not "
                                        f"supported by the exported model (only {name}={neutral})")

    def overlay(base: Dict, new: Dict) -> Dict:
        out = dict(base)
        for key, value in new.items():
            if key in base:
                out[key] = overlay(base[key], value) if isinstance(base[key], dict) and isinstance(value, dict) else value
        return out

    cfg = overlay(defaults, model_cfg)
    cfg["supported_modality"] = modality
    m = cfg["modalities"][modality.lower()]

    def refuse(option: str, value, why: str):
        raise UnsupportedCheckpoint(f"{where}: {option}={value!r} is not supported by the exported "
                                    f"model ({why})")

    if modality == "AUDIO" and m["conv_pos_pre_ln"]:
        refuse("modalities.audio.conv_pos_pre_ln", True, "a layer norm before the positional convs")
    if modality == "IMAGE":
        if m["use_alibi_encoder"]:
            refuse("modalities.image.use_alibi_encoder", True, "2D ALiBi")
        if m["embed_dim"] != cfg["embed_dim"]:
            refuse("modalities.image.embed_dim", m["embed_dim"], f"patch width must equal embed_dim={cfg['embed_dim']}")
    if modality == "TEXT" and not m["learned_pos"] and not m["no_token_positional_embeddings"]:
        refuse("modalities.text.learned_pos", False, "sinusoidal positions")
    heads = m["num_alibi_heads"]
    if m["use_alibi_encoder"] and heads not in (None, cfg["num_heads"]):
        refuse(f"modalities.{modality.lower()}.num_alibi_heads", heads, f"must equal num_heads={cfg['num_heads']}")
    return cfg


def hf_config_kwargs(cfg: Dict[str, Any], weights: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """Our resolved model config (+ shapes read from the weights) -> ``Data2Vec2Config`` kwargs."""
    from ..audio_frames import parse_conv_spec

    modality = cfg["supported_modality"]
    m = cfg["modalities"][modality.lower()]
    prefix = f"modality_encoders.{modality}."
    kwargs = dict(
        modality=modality, hidden_size=cfg["embed_dim"], num_hidden_layers=cfg["depth"],
        num_attention_heads=cfg["num_heads"], intermediate_size=int(cfg["embed_dim"] * cfg["mlp_ratio"]),
        layer_norm_eps=cfg["norm_eps"], norm_affine=cfg["norm_affine"],
        layer_norm_first=cfg["layer_norm_first"], hidden_dropout=cfg["encoder_dropout"],
        attention_dropout=cfg["attention_dropout"], activation_dropout=cfg["activation_dropout"],
        post_mlp_dropout=cfg["post_mlp_drop"], prenet_depth=m["prenet_depth"],
        context_norm=not cfg["layer_norm_first"] and (modality != "TEXT" or m["prenet_depth"] > 0),
        context_dropout=m["prenet_dropout"] if (modality != "TEXT" or m["prenet_depth"] > 0) else 0.0,
        num_extra_tokens=m["num_extra_tokens"], use_alibi=m["use_alibi_encoder"],
        num_alibi_heads=m["num_alibi_heads"],
    )
    if m["use_alibi_encoder"]:
        kwargs["alibi_scale_shape"] = list(weights[prefix + "alibi_scale"].shape)
    if modality == "AUDIO":
        kwargs.update(conv_layers=[list(layer) for layer in parse_conv_spec(m["feature_encoder_spec"])],
                      extractor_mode=m["extractor_mode"], conv_pos_width=m["conv_pos_width"],
                      conv_pos_depth=m["conv_pos_depth"], conv_pos_groups=m["conv_pos_groups"],
                      conv_pos_zero_padding=m["conv_pos_zero_padding"])
    elif modality == "IMAGE":
        kwargs.update(image_size=m["input_size"], num_channels=m["in_chans"], patch_size=m["patch_size"],
                      fixed_positions=m["fixed_positions"])
    else:
        positions = weights.get(prefix + "local_encoder.embed_positions.weight")
        pad = 1 if positions is None else positions.size(0) - m["max_source_positions"] - 1
        kwargs.update(vocab_size=weights[prefix + "local_encoder.embed_tokens.weight"].size(0),
                      pad_token_id=pad, max_position_embeddings=m["max_source_positions"],
                      scale_embedding=not m["no_scale_embedding"],
                      layernorm_embedding=m["layernorm_embedding"],
                      token_positional_embeddings=not m["no_token_positional_embeddings"],
                      text_dropout=m["dropout"])
    return kwargs


def encoder_weights(state: Dict[str, Any], prefix: str = "") -> Dict[str, torch.Tensor]:
    """The student encoder's tensors: teacher (``_ema*``), decoders and ``mask_emb`` left out."""
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key.startswith("_ema") or ".decoder." in key or key.endswith(".mask_emb"):
            continue
        out[key] = value
    return out


def _load_strictly(model: torch.nn.Module, weights: Dict[str, torch.Tensor], where: str) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise UnsupportedCheckpoint(
            f"{where}: its weights do not map onto the exported model (an option it does not "
            f"implement?): missing {sorted(missing)[:8]}, unexpected {sorted(unexpected)[:8]}")


def _add_auto_map(path: Path, auto_map: Dict[str, Any]) -> None:
    data = json.loads(path.read_text())
    data["auto_map"] = auto_map
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _readable(path: Path) -> None:
    """transformers writes the weights 0600 (a temporary file renamed); give them the
    permissions any other file written here gets, so a shared folder is usable."""
    path.chmod(0o666 & ~_umask())


def export(checkpoint: str, out_dir: str, overwrite: bool = False) -> Path:
    """Write the transformers folder for ``checkpoint``; returns ``out_dir``.

    The folder is built next to ``out_dir`` and moved into place when complete, so a failed
    export leaves nothing behind. A non-empty ``out_dir`` is refused unless ``overwrite``,
    which replaces the files an export writes (and removes those of an earlier CTC export)
    and leaves any other file alone.
    """
    from .modeling_data2vec2 import Data2Vec2Config, Data2Vec2ForCTC, Data2Vec2Model

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise console.UserInputError(f"{out} exists and is not an empty folder: choose another one "
                                     f"or pass --overwrite")
    state = read_checkpoint(checkpoint)
    cfg = _container(state.get("cfg")) or {}
    model_cfg = cfg.get("model") or {}
    name = model_cfg.get("_name")
    is_ctc = name == "wav2vec_ctc"
    if is_ctc:
        w2v_args = model_cfg.get("w2v_args")
        if not w2v_args:
            raise UnsupportedCheckpoint(f"{checkpoint}: wav2vec_ctc without embedded w2v_args (saved "
                                        f"before fine-tuning started): nothing describes its encoder")
        if float(model_cfg.get("blank_weight", 0) or 0) != 0:
            raise UnsupportedCheckpoint(f"{checkpoint}: model.blank_weight={model_cfg['blank_weight']} is not "
                                        f"supported by the exported model (only 0)")
        labels = (cfg.get("task") or {}).get("labels")
        if labels != "ltr":
            raise UnsupportedCheckpoint(f"{checkpoint}: task.labels={labels!r}; only letter targets (ltr) "
                                        f"export with a tokenizer")
        encoder_cfg = _container(w2v_args)["model"]
        if encoder_cfg.get("_name") != "data2vec_multi":
            raise UnsupportedCheckpoint(f"{checkpoint}: fine-tuned from {encoder_cfg.get('_name')!r}, "
                                        f"not data2vec_multi")
        weights = encoder_weights(state["model"], CTC_PREFIX)
    elif name == "data2vec_multi":
        encoder_cfg = model_cfg
        weights = encoder_weights(state["model"])
    else:
        raise UnsupportedCheckpoint(f"{checkpoint}: model {name!r} is neither data2vec_multi (pretrained) "
                                    f"nor wav2vec_ctc (fine-tuned)")
    resolved = resolved_model_cfg(encoder_cfg, checkpoint)
    kwargs = hf_config_kwargs(resolved, weights)
    if is_ctc:
        if resolved["supported_modality"] != "AUDIO":
            raise UnsupportedCheckpoint(f"{checkpoint}: CTC over a {resolved['supported_modality']} model")
        head = state["model"][HEAD_PREFIX + "weight"]
        kwargs.update(vocab_size=head.size(0), final_dropout=float(model_cfg.get("final_dropout", 0.0)))
    config = Data2Vec2Config(**kwargs)
    if is_ctc:
        model = Data2Vec2ForCTC(config)
        weights = {**{f"data2vec2.{k}": v for k, v in weights.items()},
                   "lm_head.weight": state["model"][HEAD_PREFIX + "weight"],
                   "lm_head.bias": state["model"][HEAD_PREFIX + "bias"]}
    else:
        model = Data2Vec2Model(config)
    _load_strictly(model, weights, checkpoint)
    model.eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(staging, safe_serialization=True)
        _readable(staging / "model.safetensors")
        module = MODEL_FILE[:-3]
        auto_map = {"AutoConfig": f"{module}.Data2Vec2Config", "AutoModel": f"{module}.Data2Vec2Model"}
        if is_ctc:
            auto_map["AutoModelForCTC"] = f"{module}.Data2Vec2ForCTC"
        _add_auto_map(staging / "config.json", auto_map)
        shutil.copyfile(HERE / MODEL_FILE, staging / MODEL_FILE)
        if is_ctc:
            task_cfg = cfg.get("task") or {}
            write_processor(staging, state, normalize=bool(task_cfg.get("normalize", True)),
                            sample_rate=int(task_cfg.get("sample_rate", 16000)), where=checkpoint)
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


# every name an export may write (an overwrite removes them all first: no stale tokenizer
# next to a pretrained model)
EXPORT_FILES = ("config.json", "model.safetensors", MODEL_FILE, PROCESSING_FILE, "vocab.json",
                "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                "preprocessor_config.json")


def _publish(staging: Path, out: Path) -> None:
    os.chmod(staging, 0o777 & ~_umask())
    if not out.exists():
        os.replace(staging, out)
        return
    if not out.is_dir():
        raise console.UserInputError(f"{out} is a file, not a folder")
    for name in EXPORT_FILES:
        (out / name).unlink(missing_ok=True)
    for path in staging.iterdir():
        os.replace(path, out / path.name)


def write_processor(out: Path, state: Dict[str, Any], normalize: bool, sample_rate: int, where: str) -> None:
    """Feature extractor (the task's normalisation) and CTC tokenizer (the task's letter dictionary)."""
    from .processing_data2vec2 import Data2Vec2CTCTokenizer, Data2Vec2FeatureExtractor

    dictionary = (state.get("task_state") or {}).get("target_dictionary")
    if dictionary is None:
        raise UnsupportedCheckpoint(f"{where}: no target dictionary in task_state (not an "
                                    f"audio_finetuning checkpoint?)")
    symbols = list(dictionary.symbols)
    if len(set(symbols)) != len(symbols):
        raise UnsupportedCheckpoint(f"{where}: the target dictionary repeats a symbol")
    blank, pad, eos, unk = (symbols[dictionary.bos()], symbols[dictionary.pad()],
                            symbols[dictionary.eos()], symbols[dictionary.unk()])
    if "|" not in symbols:
        raise UnsupportedCheckpoint(f"{where}: the letter dictionary has no word boundary '|'")
    vocab = out / "vocab.json"
    vocab.write_text(json.dumps({s: i for i, s in enumerate(symbols)}, indent=1, ensure_ascii=False) + "\n",
                     encoding="utf-8")
    # the CTC blank is fairseq's bos (audio_finetuning's blank_symbol "<s>"); pad and eos are
    # left out of transcripts as d2v-infer does; <unk> stays
    tokenizer = Data2Vec2CTCTokenizer(str(vocab), bos_token=blank, eos_token=eos, unk_token=unk,
                                      pad_token=blank, word_delimiter_token="|",
                                      dropped_tokens=[blank, pad, eos], do_lower_case=False,
                                      clean_up_tokenization_spaces=False)
    tokenizer.save_pretrained(out)
    processing = PROCESSING_FILE[:-3]
    _add_auto_map(out / "tokenizer_config.json",
                  {"AutoTokenizer": [f"{processing}.Data2Vec2CTCTokenizer", None]})
    extractor = Data2Vec2FeatureExtractor(feature_size=1, sampling_rate=sample_rate, padding_value=0.0,
                                          do_normalize=normalize, return_attention_mask=True)
    extractor.save_pretrained(out)
    _add_auto_map(out / "preprocessor_config.json",
                  {"AutoFeatureExtractor": f"{processing}.Data2Vec2FeatureExtractor"})
    shutil.copyfile(HERE / PROCESSING_FILE, out / PROCESSING_FILE)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every option's default."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="d2v-export-hf", description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("checkpoint", help="data2vec_multi (pretrained) or wav2vec_ctc (fine-tuned) checkpoint")
    p.add_argument("out_dir", help="folder to write (created; must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in out_dir (other files there are kept)")
    p.add_argument("--log-level", default="INFO", help="logging level of the command")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = build_parser().parse_args(argv)
    print(f"exporting {args.checkpoint} ...", flush=True)
    out = export(args.checkpoint, args.out_dir, overwrite=args.overwrite)
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    print(f"wrote {out}: {', '.join(files)}")
    return out


def cli() -> int:
    return console.run(main, "d2v-export-hf", (console.UserInputError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(cli())
