"""Per-utterance encoder features from a data2vec 2.0 checkpoint (``d2v-features``).

Example::

    d2v-features checkpoints/tiny_audio/checkpoint_last.pt --data data/speech_corpus \\
        --split test --out-dir feats/ --layer top_k [--top-k 3] [--batch-size 1] [--cpu]

The checkpoint is a pretrained ``data2vec_multi`` one (the student encoder is used; the EMA
teacher and the decoder are not) or a fine-tuned ``wav2vec_ctc`` one (its encoder, without
the CTC head; the pretrained file it came from is not needed).

``--layer`` picks what is written, each (T, D) float32 with T the conv frame count of the
utterance (``d2v_plugin.audio_frames.feature_lengths``) and D the model width:

* ``final``: the encoder output ``x`` (what the CTC head of a fine-tuned model reads);
* ``N`` (an integer): ``layer_results[N]`` of ``extract_features``, 0-based, negative counts
  from the top. These are the per-block data2vec target candidates: with the published
  configs (``end_of_block_targets=false``) the FFN output of block N *before* its residual
  and LayerNorm; with ``end_of_block_targets=true`` the block output;
* ``top_k``: the data2vec 2.0 training target computed from the same forward pass (no
  teacher): the last K of ``layer_results``, each instance-normalised over time, averaged
  (``d2v_plugin.models.targets.average_top_k`` with the model's normalisation settings; K =
  ``--top-k``, default the model's ``average_top_k_layers``).

Padding-aware: only the T valid frames of each utterance are written, and ``top_k``'s
instance norm is computed over those frames only. ``--batch-size`` > 1 pads utterances of a
batch to the longest; padded frames are masked in attention, but the convolutional
positional encoder still sees them near the end of shorter utterances, so batched features
differ slightly from unbatched ones -- the default batch size 1 gives each utterance's
features exactly as the model computes them alone.

Output (``--out-dir``): ``<relative audio path, "/" -> "__", extension -> .npy>`` per
utterance (``test/test_0000.wav`` -> ``test__test_0000.npy``) and ``features.tsv``: first
line the absolute output folder, then ``<npy file><TAB><T><TAB><D><TAB><audio path relative
to the manifest root>`` per utterance in manifest order.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from .. import console

logger = logging.getLogger(__name__)

Layer = Union[int, str]   # an int index, "final" or "top_k"


@dataclass
class FeatureResult:
    index: str                                    # features.tsv
    files: List[str] = field(default_factory=list)  # .npy files, manifest order
    shapes: List[tuple] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # too short for the conv encoder


def parse_layer(value: str) -> Layer:
    if value in ("final", "top_k"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layer is 'final', 'top_k' or an integer, got {value!r}")


def feature_name(rel_path: str) -> str:
    """``a/b/utt.wav`` -> ``a__b__utt.npy``."""
    return os.path.splitext(rel_path.replace(os.sep, "/"))[0].replace("/", "__") + ".npy"


def select(features: dict, layer: Layer, b: int, frames: int, model_cfg, top_k: Optional[int]) -> torch.Tensor:
    """The (frames, D) features of row ``b`` for ``layer`` (see the module doc)."""
    from d2v_plugin.models.targets import average_top_k

    if layer == "final":
        return features["x"][b, :frames]
    results = features["layer_results"]
    if layer == "top_k":
        k = top_k or model_cfg.average_top_k_layers
        rows = [r[b:b + 1, :frames] for r in results]
        return average_top_k(rows, k, model_cfg.instance_norm_target_layer,
                             model_cfg.layer_norm_target_layer, model_cfg.layer_norm_targets,
                             model_cfg.instance_norm_targets)[0]
    if not -len(results) <= layer < len(results):
        raise console.UserInputError(f"--layer {layer}: the model has {len(results)} blocks "
                                  f"(valid: {-len(results)} .. {len(results) - 1})")
    return results[layer][b, :frames]


def extract(checkpoint: str, data: str, split: str, out_dir: str, layer: Layer = "final",
            top_k: Optional[int] = None, batch_size: int = 1, cpu: bool = False,
            show_progress: bool = False) -> FeatureResult:
    """Write one ``.npy`` per utterance of ``<data>/<split>.tsv`` plus ``features.tsv``
    (``show_progress``: a live progress line on stderr, see ``console.Progress``)."""
    from d2v_plugin.audio_frames import feature_lengths, receptive_field
    from d2v_plugin.data.audio_dataset import load_padded_batch
    from d2v_plugin.data.manifest import read_manifest

    from .checkpoint import load_encoder

    tsv = os.path.join(data, f"{split}.tsv")
    manifest = read_manifest(tsv)
    enc = load_encoder(checkpoint, data)
    model = enc.model
    device = torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")
    model.to(device)
    audio_encoder = model.modality_encoders["AUDIO"]
    conv_spec = audio_encoder.conv_spec
    min_samples = receptive_field(conv_spec)
    if layer == "top_k" and top_k is not None and not 0 < top_k <= model.cfg.depth:
        raise console.UserInputError(f"--top-k {top_k}: the model has {model.cfg.depth} blocks")

    entries = list(manifest.entries)
    rel = {e.line: os.path.relpath(e.path, manifest.root).replace(os.sep, "/") for e in entries}
    skipped = [rel[e.line] for e in entries if e.num_samples < min_samples]
    if skipped:
        logger.warning("skipping %d utterances shorter than the conv encoder's receptive field "
                       "(%d samples), e.g. %s", len(skipped), min_samples, skipped[:3])
    usable = [e for e in entries if e.num_samples >= min_samples]
    order = sorted(usable, key=lambda e: e.num_samples)
    os.makedirs(out_dir, exist_ok=True)
    shapes = {}
    progress = console.Progress("extracting features", len(order), "utterances", enabled=show_progress)
    with torch.inference_mode(), progress:
        for start in range(0, len(order), max(1, batch_size)):
            batch = order[start:start + max(1, batch_size)]
            source, padding, sizes = load_padded_batch(batch, tsv, enc.sample_rate, enc.normalize)
            out = model.extract_features(source.to(device), None if padding is None else padding.to(device),
                                         mask=False)
            frames = feature_lengths(torch.tensor(sizes), conv_spec).tolist()
            for b, e in enumerate(batch):
                feats = select(out, layer, b, frames[b], model.cfg, top_k).float().cpu().numpy()
                name = feature_name(rel[e.line])
                np.save(os.path.join(out_dir, name), feats)
                shapes[e.line] = (name, feats.shape)
            progress.advance(len(batch))
    index = os.path.join(out_dir, "features.tsv")
    result = FeatureResult(index, skipped=skipped)
    with open(index, "w", encoding="utf-8", newline="\n") as f:
        f.write(os.path.abspath(out_dir) + "\n")
        for e in usable:  # manifest order
            name, shape = shapes[e.line]
            f.write(f"{name}\t{shape[0]}\t{shape[1]}\t{rel[e.line]}\n")
            result.files.append(os.path.join(out_dir, name))
            result.shapes.append(tuple(shape))
    logger.info("wrote %d feature files (%s) and %s", len(result.files), layer, index)
    return result


def main(argv: Optional[Sequence[str]] = None) -> FeatureResult:
    p = argparse.ArgumentParser(prog="d2v-features", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="pretrained data2vec_multi or fine-tuned wav2vec_ctc checkpoint")
    p.add_argument("--data", required=True, help="folder with <split>.tsv")
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--layer", type=parse_layer, default="final", help="final | top_k | N")
    p.add_argument("--top-k", type=int, default=None, help="K for --layer top_k (default: the model's)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--log-level", default="INFO", help="logging level of the command (console script)")
    args = p.parse_args(argv)
    result = extract(args.checkpoint, args.data, args.split, args.out_dir, args.layer, args.top_k,
                     args.batch_size, args.cpu, show_progress=True)
    dims = {s[1] for s in result.shapes}
    print(f"{len(result.files)} utterances -> {args.out_dir} (layer {args.layer}, D={sorted(dims)}); "
          f"index {result.index}")
    return result


def cli() -> int:
    from d2v_plugin.data.audio_dataset import AudioFileError
    from d2v_plugin.data.manifest import ManifestError

    return console.run(main, "d2v-features",
                    (console.UserInputError, FileNotFoundError, ManifestError, AudioFileError))


if __name__ == "__main__":
    sys.exit(cli())
