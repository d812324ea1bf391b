#!/usr/bin/env python3
"""Write a small, deterministic image-folder corpus from scikit-learn's handwritten digits.

Why this exists: the image side of the plugin needs real images with labels for
pretraining smoke runs and a linear probe, and downloading ImageNet (or anything) is not
an option in tests or offline machines. scikit-learn ships the UCI handwritten digits
(1797 grey 8x8 images, 10 classes) inside its wheel, and fairseq already depends on
scikit-learn, so the corpus is rebuilt bit-for-bit from a seed instead of being shipped.

Layout (the image-folder convention: one sub-folder per class)::

    OUT_DIR/{train,valid,test}/<digit>/<NNNN>.png   grey PNG, --size x --size pixels;
                                                    NNNN = index in load_digits()
    OUT_DIR/corpus.json   stamp: version + parameters + per-split class counts

Each class is split 70/15/15 on its own (stratified), so every split holds every digit
in the same proportions. The 8x8 images (values 0-16) are scaled to 0-255 and upscaled
with bicubic interpolation; they stay single-channel, the dataset converts to RGB.

Usage::

    python examples/make_image_corpus.py OUT_DIR [--size 32] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

# Bump whenever anything that changes the output (scaling, resampling, split rule, names)
# changes, so stale corpora are rebuilt.
CORPUS_VERSION = 1

SPLITS = ("train", "valid", "test")
VALID_FRACTION = 0.15
TEST_FRACTION = 0.15
STAMP_NAME = "corpus.json"
MIN_SIZE = 8
_IMAGE_NAME = re.compile(r"\d{4}\.png")


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) uint8 images in 0-255 and (N,) int labels, from scikit-learn's copy."""
    from sklearn.datasets import load_digits  # bundled CSV: no download

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    return images, digits.target.astype(np.int64)


def stratified_split(labels: np.ndarray, seed: int) -> dict[str, list[int]]:
    """Indices per split: each class shuffled with its own seeded RNG, then cut 70/15/15.

    Per-class RNGs make one class's split independent of the others; rounding gives each
    split its share of every class (e.g. 178 images -> 124/27/27).
    """
    out: dict[str, list[int]] = {split: [] for split in SPLITS}
    for cls in sorted(set(labels.tolist())):
        members = sorted(np.flatnonzero(labels == cls).tolist())
        random.Random(f"{seed}:{cls}").shuffle(members)
        n_valid = int(round(len(members) * VALID_FRACTION))
        n_test = int(round(len(members) * TEST_FRACTION))
        n_train = len(members) - n_valid - n_test
        out["train"] += members[:n_train]
        out["valid"] += members[n_train:n_train + n_valid]
        out["test"] += members[n_train + n_valid:]
    return {split: sorted(idx) for split, idx in out.items()}


def upscale(image: np.ndarray, size: int) -> Image.Image:
    """One 8x8 uint8 array -> a grey ``size`` x ``size`` Pillow image (bicubic)."""
    img = Image.fromarray(image)  # uint8 (8, 8) -> mode "L"
    return img if size == image.shape[0] else img.resize((size, size), Image.Resampling.BICUBIC)


def _clear_images(out_dir: Path) -> None:
    """Delete PNGs this script wrote earlier, so no stale image survives a re-split."""
    for split in SPLITS:
        split_dir = out_dir / split
        if not split_dir.is_dir():
            continue
        for class_dir in split_dir.iterdir():
            if class_dir.is_dir() and class_dir.name.isdigit():
                for path in class_dir.iterdir():
                    if _IMAGE_NAME.fullmatch(path.name):
                        path.unlink()


def _load_complete_stamp(out_dir: Path, params: dict) -> dict | None:
    """Return the stored summary if OUT_DIR holds a finished corpus for ``params``."""
    try:
        data = json.loads((out_dir / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("version") != CORPUS_VERSION or data.get("params") != params:
        return None
    for split in SPLITS:
        for cls, count in data.get("splits", {}).get(split, {}).get("per_class", {}).items():
            class_dir = out_dir / split / cls
            found = len([p for p in class_dir.glob("*.png") if _IMAGE_NAME.fullmatch(p.name)]) \
                if class_dir.is_dir() else 0
            if found != count:
                return None
    return data


def make_corpus(out_dir: str | os.PathLike, size: int = 32, seed: int = 1) -> dict:
    """Build (or reuse) the corpus in ``out_dir`` and return its summary.

    The summary holds per-split and per-class image counts, plus "cached" (True when an
    existing stamp matched) and "elapsed_seconds".
    """
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE} (the digits are 8x8), got {size}")
    out_dir = Path(out_dir)
    params = {"size": size, "seed": seed, "valid_fraction": VALID_FRACTION,
              "test_fraction": TEST_FRACTION}
    start = time.perf_counter()
    stamped = _load_complete_stamp(out_dir, params)
    if stamped is not None:
        logger.info("%s already holds this corpus (stamp %s); skipping", out_dir, STAMP_NAME)
        return {**stamped, "cached": True, "elapsed_seconds": time.perf_counter() - start}

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STAMP_NAME).unlink(missing_ok=True)  # incomplete until rewritten
    _clear_images(out_dir)
    images, labels = load_digit_images()
    summary: dict = {"version": CORPUS_VERSION, "params": params, "source": "sklearn.datasets.load_digits",
                     "classes": [str(c) for c in sorted(set(labels.tolist()))], "splits": {}}
    for split, indices in stratified_split(labels, seed).items():
        per_class: dict[str, int] = {}
        for index in indices:
            cls = str(labels[index])
            class_dir = out_dir / split / cls
            class_dir.mkdir(parents=True, exist_ok=True)
            # Fixed compression settings; Pillow writes no timestamp, so bytes are stable.
            upscale(images[index], size).save(class_dir / f"{index:04d}.png", format="PNG",
                                              optimize=False, compress_level=6)
            per_class[cls] = per_class.get(cls, 0) + 1
        summary["splits"][split] = {"count": len(indices), "per_class": dict(sorted(per_class.items()))}

    stamp_tmp = out_dir / (STAMP_NAME + ".tmp")
    stamp_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(stamp_tmp, out_dir / STAMP_NAME)  # written last: marks completeness
    elapsed = time.perf_counter() - start
    logger.info("wrote %d images to %s in %.1f s", len(labels), out_dir, elapsed)
    return {**summary, "cached": False, "elapsed_seconds": elapsed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=int, default=32, help="output side in pixels (>= 8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the train/valid/test split")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")

    summary = make_corpus(args.out_dir, args.size, args.seed)
    state = "reused" if summary["cached"] else "generated"
    print(f"{state} image corpus in {args.out_dir} ({summary['elapsed_seconds']:.1f} s)")
    for split in SPLITS:
        s = summary["splits"][split]
        print(f"  {split:5s} {s['count']:5d} images in {len(s['per_class'])} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
