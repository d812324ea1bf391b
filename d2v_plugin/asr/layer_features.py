"""Every layer's output of a frozen speech upstream, extracted once per split and cached on disk.

Upstreams (``load_upstream``): a ``data2vec_multi`` AUDIO checkpoint (ours, any speech
config, or the reference implementation's), fairseq's ``wav2vec2``, a fine-tuned
``wav2vec_ctc`` (its encoder), or any of them at random initialisation (the same
architecture built from the checkpoint's config with ``torch.manual_seed(seed)``).

"All layers" (SUPERB's convention, ``hidden_states`` of s3prl): the input of the first
transformer block (local conv features + positional convolution, after the encoder's input
LayerNorm where the architecture has one) followed by the output of every block, i.e.
L = depth + 1 hidden states of (T, D), T = conv frames of the utterance. For the post-LN
blocks of the published configs (data2vec 2.0 and wav2vec 2.0 base) every block output is
LayerNorm'ed, so all states are on the same scale; for pre-LN models the block outputs are
the raw residual stream (the final LayerNorm is not applied to them) -- the probe heads
normalise each layer (``F.layer_norm`` without parameters) before weighting, which makes
both conventions comparable. For data2vec these are the block outputs, not the data2vec
training targets (``layer_results``: the FFN outputs before the residual).

Cache: ``<cache dir>/<key>.feats.npy`` (all frames of the split, (frames, L, D) float16),
``<key>.lengths.npy`` and ``<key>.json`` (written last: marks the entry complete). The key
hashes the checkpoint file's bytes, random init and its seed, the split's manifest and the
corpus stamp, the extraction batch size and ``FEATURE_VERSION``; a changed checkpoint or
corpus gets a new key, so stale features are never read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from ..console import UserInputError

logger = logging.getLogger(__name__)

FEATURE_VERSION = 1  # bump when what is extracted changes
SPEECH_MODELS = ("data2vec_multi", "wav2vec2", "wav2vec_ctc")


@dataclass
class Upstream:
    model: torch.nn.Module
    family: str                 # "data2vec_multi" or "wav2vec2"
    normalize: bool             # per-utterance zero mean / unit variance, as in training
    sample_rate: int
    blocks: torch.nn.ModuleList
    frames: Callable[[torch.Tensor], torch.Tensor]   # samples -> conv frames
    min_samples: int


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_state(path: str) -> dict:
    from .checkpoint import read_state

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return read_state(path)
    except Exception as e:  # a pickle, zip or fairseq error: the file is not a checkpoint
        try:  # fairseq's upgrade step may fail on a valid but stripped checkpoint: say what model it holds
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            state = None
        if isinstance(state, dict) and state.get("cfg") is not None:
            return state
        raise UserInputError(f"{path}: not a readable fairseq checkpoint ({type(e).__name__}: {e})") from None


def _speech_encoder(model: torch.nn.Module, path: str) -> torch.nn.Module:
    if hasattr(model, "w2v_encoder"):  # wav2vec_ctc: the encoder without its CTC head
        model = model.w2v_encoder.w2v_model
    name = type(model).__name__
    if name == "Data2Vec2Model":
        if "AUDIO" not in model.modality_encoders:
            raise UserInputError(f"{path}: not a speech model (data2vec_multi without an AUDIO "
                                 f"encoder; modalities {sorted(model.modality_encoders)})")
    elif name != "Wav2Vec2Model":
        raise UserInputError(f"{path}: not a speech model ({name})")
    return model


def load_upstream(path: str, random_init: bool = False, seed: int = 1) -> Upstream:
    """The frozen speech encoder of a checkpoint (or the same architecture at random init)."""
    import d2v_plugin  # noqa: F401  (registers data2vec_multi)
    from fairseq import checkpoint_utils, tasks

    from ..audio_frames import feature_lengths, receptive_field
    from .checkpoint import model_name

    state = _read_state(path)
    name = model_name(state)
    if name not in SPEECH_MODELS:
        raise UserInputError(f"{path}: not a speech model (model {name!r}; the probe reads "
                             f"{', '.join(SPEECH_MODELS)} checkpoints)")
    cfg = state["cfg"]
    if name == "data2vec_multi" and str(cfg["model"].get("supported_modality", "AUDIO")).upper() != "AUDIO":
        raise UserInputError(f"{path}: not a speech model (data2vec_multi for "
                             f"{cfg['model'].get('supported_modality')})")
    if random_init:
        task = tasks.setup_task(cfg.task)
        torch.manual_seed(seed)
        model = task.build_model(cfg.model)
    else:
        models, _, _ = checkpoint_utils.load_model_ensemble_and_task([path], state=state)
        model = models[0]
    model = _speech_encoder(model, path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    task_cfg = cfg.task if "w2v_args" not in cfg.model or cfg.model.w2v_args is None else cfg.model.w2v_args.task
    normalize = bool(task_cfg.get("normalize", False))
    sample_rate = int(task_cfg.get("sample_rate", 16000))
    if type(model).__name__ == "Data2Vec2Model":
        spec = model.modality_encoders["AUDIO"].conv_spec
        return Upstream(model, "data2vec_multi", normalize, sample_rate, model.blocks,
                        lambda n: feature_lengths(n, spec), receptive_field(spec))
    spec = eval(model.cfg.conv_feature_layers) if hasattr(model, "cfg") else None  # noqa: S307 (fairseq's own format)
    return Upstream(model, "wav2vec2", normalize, sample_rate, model.encoder.layers,
                    lambda n: model._get_feat_extract_output_lengths(torch.as_tensor(n)).long(),
                    receptive_field(spec) if spec else 400)


@torch.no_grad()
def hidden_states(up: Upstream, source: torch.Tensor, padding_mask: Optional[torch.Tensor]) -> List[torch.Tensor]:
    """The L = blocks + 1 hidden states (B, T, D) of a batch (see the module doc)."""
    states: List[torch.Tensor] = []
    time_first = up.family == "wav2vec2"  # fairseq's TransformerEncoder layers run (T, B, D)

    def keep(x):
        states.append((x.transpose(0, 1) if time_first else x).float())

    handles = [up.blocks[0].register_forward_pre_hook(lambda m, args: keep(args[0]))]
    handles += [b.register_forward_hook(lambda m, args, out: keep(out[0])) for b in up.blocks]
    try:
        up.model.extract_features(source, padding_mask, mask=False)  # same call for both families
    finally:
        for h in handles:
            h.remove()
    if len(states) != len(up.blocks) + 1:
        raise RuntimeError(f"collected {len(states)} hidden states for {len(up.blocks)} blocks (layerdrop in eval?)")
    if up.family == "data2vec_multi":
        extra = up.model.modality_encoders["AUDIO"].num_extra_tokens
        states = [s[:, extra:] for s in states]
    return states


@dataclass
class SplitFeatures:
    feats: np.ndarray      # (total frames, L, D) float16, utterances concatenated in manifest order
    lengths: np.ndarray    # (N,) frames per utterance
    cached: bool           # read from the cache (no extraction)
    seconds: float

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)])


def cache_key(checkpoint_sha: str, random_init: bool, seed: int, manifest: str, batch_size: int) -> str:
    h = hashlib.sha256()
    stamp = os.path.join(os.path.dirname(os.path.abspath(manifest)), "corpus.json")
    parts = [f"v{FEATURE_VERSION}", checkpoint_sha, f"random_init={random_init}:{seed if random_init else ''}",
             f"batch={batch_size}"]
    for p in (manifest, stamp):
        parts.append(hashlib.sha256(open(p, "rb").read()).hexdigest() if os.path.isfile(p) else "-")
    h.update("\n".join(parts).encode())
    return h.hexdigest()[:32]


def _read_cache(base: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    try:
        meta = json.load(open(base + ".json", encoding="utf-8"))
        feats = np.load(base + ".feats.npy")
        lengths = np.load(base + ".lengths.npy")
    except (OSError, ValueError):
        return None
    if list(feats.shape) != meta.get("shape") or int(lengths.sum()) != feats.shape[0]:
        logger.warning("ignoring the inconsistent cache entry %s", base)
        return None
    return feats, lengths


def _save_npy(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def split_features(up_loader: Callable[[], Upstream], manifest_path: str, cache_dir: Optional[str], key: str,
                   batch_size: int = 1, progress: str = "", describe: Optional[dict] = None) -> SplitFeatures:
    """Hidden states of every utterance of a manifest, from the cache or extracted (and cached)."""
    from ..data.audio_dataset import load_padded_batch
    from ..data.manifest import read_manifest

    start = time.perf_counter()
    base = os.path.join(cache_dir, key) if cache_dir else None
    if base:
        hit = _read_cache(base)
        if hit is not None:
            logger.info("%s: features from the cache %s", progress or manifest_path, base)
            return SplitFeatures(hit[0], hit[1], True, time.perf_counter() - start)
    up = up_loader()
    entries = read_manifest(manifest_path).entries
    short = [e for e in entries if e.num_samples < up.min_samples]
    if short:
        raise UserInputError(f"{manifest_path}:{short[0].line}: {len(short)} utterance(s) shorter than the "
                             f"encoder's receptive field ({up.min_samples} samples)")
    order = sorted(range(len(entries)), key=lambda i: entries[i].num_samples)
    per_utt: List[Optional[np.ndarray]] = [None] * len(entries)
    last = time.perf_counter()
    for done in range(0, len(order), batch_size):
        batch = order[done:done + batch_size]
        source, padding, sizes = load_padded_batch([entries[i] for i in batch], manifest_path,
                                                   up.sample_rate, up.normalize)
        states = hidden_states(up, source, padding)
        frames = up.frames(torch.tensor(sizes)).tolist()
        stacked = torch.stack(states, dim=2)  # (B, T, L, D)
        for b, i in enumerate(batch):
            per_utt[i] = stacked[b, :frames[b]].to(torch.float16).numpy()
        if time.perf_counter() - last > 5:
            logger.info("%s: extracted %d/%d utterances", progress or manifest_path, done + len(batch), len(order))
            last = time.perf_counter()
    feats = np.concatenate(per_utt, axis=0)
    lengths = np.array([u.shape[0] for u in per_utt], dtype=np.int64)
    if not np.isfinite(feats).all():
        raise RuntimeError(f"non-finite features from the upstream for {manifest_path} (float16 overflow?)")
    if base:
        os.makedirs(cache_dir, exist_ok=True)
        _save_npy(base + ".feats.npy", feats)
        _save_npy(base + ".lengths.npy", lengths)
        tmp = f"{base}.{os.getpid()}.tmp.json"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"manifest": os.path.abspath(manifest_path), "shape": list(feats.shape),
                       "feature_version": FEATURE_VERSION, **(describe or {})}, f)
        os.replace(tmp, base + ".json")  # last: marks the entry complete
    seconds = time.perf_counter() - start
    logger.info("%s: extracted %d utterances (%d frames, %d layers x %d) in %.1f s", progress or manifest_path,
                len(entries), feats.shape[0], feats.shape[1], feats.shape[2], seconds)
    return SplitFeatures(feats, lengths, False, seconds)
