"""Audio folder -> fairseq manifests ``train.tsv`` / ``valid.tsv`` (``d2v-manifest``).

Example::

    d2v-manifest /data/LibriSpeech/train-clean-100 --dest manifests/ --ext flac \\
        --valid-percent 0.01 --seed 42 [--skip-bad]
    # a whole folder as one named split (the base fine-tuning configs validate on dev_other):
    d2v-manifest /data/LibriSpeech/dev-other --dest manifests/ --ext flac --name dev_other

``--name NAME`` writes every file to ``NAME.tsv`` (no split drawn), so LibriSpeech's
``dev-clean``/``dev-other``/``test-clean``/``test-other`` become the split names the configs
and ``d2v-infer --split`` use without renaming files.

Manifest format (what fairseq's ``audio_pretraining``/``audio_finetuning`` tasks and
``data2vec_pretraining`` read): the first line is the absolute audio root, then one
``<path relative to root><TAB><number of samples>`` line per file. Files are found
recursively (``--ext``, case-insensitive), listed in sorted relative-path order, and their
sample counts read from the file header with ``soundfile.info`` (nothing is decoded).

The split is seeded: each file, in sorted order, goes to valid with probability
``--valid-percent`` (a FRACTION in [0, 1], as in fairseq's ``wav2vec_manifest.py``) from
``random.Random(seed)``, so the same folder and seed always give the same split. With
``--valid-percent 0`` only ``train.tsv`` is written.

A file soundfile cannot read stops the run with an error naming it; with ``--skip-bad`` it
is left out with a warning, and the count is reported.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import soundfile as sf

from .. import console

logger = logging.getLogger(__name__)


class ManifestBuildError(console.UserInputError):
    """No usable audio, or an unreadable file (without ``--skip-bad``)."""


@dataclass
class ManifestResult:
    root: str
    paths: Dict[str, str]                       # split -> written .tsv
    counts: Dict[str, int]                      # split -> utterances
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def find_audio(root: str, ext: str) -> List[str]:
    """Sorted relative paths (``/``-separated) of the files under ``root`` ending in ``.ext``."""
    suffix = "." + ext.lower().lstrip(".")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(suffix):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)


def num_samples(path: str) -> int:
    """Frames in the file header; raises ManifestBuildError naming the file if unreadable."""
    try:
        frames = int(sf.info(path).frames)
    except Exception as e:  # libsndfile raises LibsndfileError/RuntimeError/TypeError variously
        raise ManifestBuildError(f"{path}: not a readable audio file ({e})") from None
    if frames <= 0:
        raise ManifestBuildError(f"{path}: contains no audio samples")
    return frames


def build_manifests(audio_dir: str, dest: str, ext: str = "wav", valid_percent: float = 0.01,
                    seed: int = 42, skip_bad: bool = False, name: Optional[str] = None) -> ManifestResult:
    """Write ``dest/train.tsv`` (and ``dest/valid.tsv`` if ``valid_percent > 0``), or with
    ``name`` every file to ``dest/<name>.tsv``."""
    if name is not None:
        if valid_percent:
            raise ManifestBuildError("--name writes one manifest of every file: leave --valid-percent out")
        if not name or os.sep in name or name.endswith(".tsv"):
            raise ManifestBuildError(f"--name is a split name such as dev_other (no folder, no .tsv), got {name!r}")
    if not 0.0 <= valid_percent <= 1.0:
        raise ManifestBuildError(f"--valid-percent is a fraction in [0, 1], got {valid_percent}")
    if not os.path.isdir(audio_dir):
        raise FileNotFoundError(f"audio folder not found: {audio_dir}")
    root = os.path.realpath(audio_dir)
    files = find_audio(root, ext)
    if not files:
        raise ManifestBuildError(f"no .{ext.lstrip('.')} files under {root}")
    rng = random.Random(seed)
    rows: Dict[str, List[str]] = {"train": [], "valid": []}
    skipped: List[Tuple[str, str]] = []
    for rel in files:
        to_valid = rng.random() < valid_percent  # drawn for every file: the split never shifts
        try:
            frames = num_samples(os.path.join(root, rel))
        except ManifestBuildError as e:
            if not skip_bad:
                raise
            logger.warning("skipping %s", e)
            skipped.append((rel, str(e)))
            continue
        rows["valid" if to_valid else "train"].append(f"{rel}\t{frames}")
    if skipped:
        logger.warning("skipped %d unreadable of %d files", len(skipped), len(files))
    if not rows["train"] and not rows["valid"]:
        raise ManifestBuildError(f"none of the {len(files)} files under {root} is readable audio")
    os.makedirs(dest, exist_ok=True)
    splits = ["train", "valid"] if valid_percent > 0 else ["train"]
    if name is not None:
        rows, splits = {name: rows["train"]}, [name]
    paths = {}
    for split in splits:
        paths[split] = os.path.join(dest, f"{split}.tsv")
        with open(paths[split], "w", encoding="utf-8", newline="\n") as f:
            f.write(root + "\n")
            f.writelines(row + "\n" for row in rows[split])
    counts = {s: len(rows[s]) for s in splits}
    for split in splits:
        if not counts[split]:
            logger.warning("%s is empty (no file drawn for it): raise --valid-percent or add data",
                           paths[split])
    logger.info("wrote %s", ", ".join(f"{paths[s]} ({counts[s]})" for s in splits))
    return ManifestResult(root, paths, counts, skipped)


def main(argv: Optional[Sequence[str]] = None) -> ManifestResult:
    p = argparse.ArgumentParser(prog="d2v-manifest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio_dir", help="folder searched recursively for audio files")
    p.add_argument("--dest", required=True, help="where train.tsv / valid.tsv go")
    p.add_argument("--ext", default="wav", help="audio extension, e.g. wav or flac")
    p.add_argument("--valid-percent", type=float, default=None,
                   help="fraction (0..1) of files for valid.tsv (default 0.01; 0 with --name)")
    p.add_argument("--name", help="write every file to NAME.tsv instead (e.g. dev_other, test_clean)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--skip-bad", action="store_true", help="leave unreadable files out (warned)")
    p.add_argument("--log-level", default="INFO", help="logging level of the command (console script)")
    args = p.parse_args(argv)
    valid_percent = args.valid_percent if args.valid_percent is not None else (0.0 if args.name else 0.01)
    result = build_manifests(args.audio_dir, args.dest, args.ext, valid_percent, args.seed,
                             args.skip_bad, args.name)
    for split, path in result.paths.items():
        print(f"{split}: {result.counts[split]} files -> {path}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} unreadable files")
    return result


def cli() -> int:
    return console.run(main, "d2v-manifest")


if __name__ == "__main__":
    sys.exit(cli())
