"""Linear probe of an image checkpoint (``d2v-image-probe``): frozen features + logistic regression.

Example (the embedded digits corpus, ``examples/make_image_corpus.py``)::

    d2v-image-probe checkpoints/tiny_image/checkpoint_last.pt --data data/digits_corpus --compare-random

For each model, every image of the train, valid and test splits goes through the
checkpoint's evaluation transform (resize + centre crop + normalisation, settings from the
checkpoint's task config) and the frozen student encoder (``extract_features``, eval mode,
no masking). A feature vector per image is pooled from the final output: ``mean`` = mean
over the patch tokens, ``cls`` = the CLS token, ``mean+cls`` = both concatenated. Features
are standardised (statistics of the train split) and an L2-regularised multinomial
logistic regression (scikit-learn) is fit on train; its inverse regularisation ``C`` is
chosen on valid from ``--C``; the table reports top-1 accuracy on valid and test.

``--compare-random`` adds the same architecture at random initialisation (``--random-init``
scores only that): the checkpoint's model config built with ``torch.manual_seed(<common.seed>)``,
which are the very weights ``fairseq-hydra-train`` starts pretraining from (it seeds torch
with ``common.seed`` right before building the model); ``--seeds S ...`` builds one per seed
and adds their mean and spread. All rows use the same data, transform and classifier.
``--compare-pixels`` adds the classifier on the transformed pixels themselves (no model), a
reference for how linearly separable the raw input already is.

Flags are the ones every probe command shares (``d2v_plugin/probe_options.py``); the old
``--c-grid`` and ``--seed`` still work, with a warning.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import console, probe_options
from ..linear_probe import fit_linear_probe

logger = logging.getLogger(__name__)

POOLS = ("mean", "cls", "mean+cls")
DEFAULT_C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class ProbeResult:
    model: str          # "pretrained" or "random init"
    pool: str
    c: float            # chosen on valid
    valid_top1: float   # in [0, 1]
    test_top1: float
    feature_dim: int
    seconds: float      # feature extraction + fitting


def load_models(checkpoint: str, random_init: bool = False, seed: Optional[int] = None):
    """(model, task) from a pretraining checkpoint; with ``random_init`` the same architecture
    freshly initialised with ``torch.manual_seed(seed)`` (default: the run's ``common.seed``)."""
    import d2v_plugin  # noqa: F401  (registers the model and tasks)
    from fairseq import checkpoint_utils, tasks

    if not random_init:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint])
        model = models[0]
    else:
        state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint)
        cfg = state["cfg"]
        # from_checkpoint: drop config fields this build no longer declares (older checkpoints,
        # reference checkpoints), as load_model_ensemble_and_task does
        task = tasks.setup_task(cfg.task, from_checkpoint=True)
        torch.manual_seed(cfg.common.seed if seed is None else seed)
        model = task.build_model(cfg.model, from_checkpoint=True)
    if getattr(model, "modality", None) != "IMAGE" or not hasattr(task, "num_patches"):
        raise console.UserInputError(f"{checkpoint}: not an image pretraining checkpoint "
                                  f"(model modality {getattr(model, 'modality', None)}, task {type(task).__name__})")
    model.remove_pretraining_modules()  # the student encoder is all a probe needs
    return model.eval(), task


@torch.no_grad()
def extract(model, task, data: str, split: str, classes: Optional[Sequence[str]] = None,
            batch_size: int = 64) -> Tuple[Dict[str, np.ndarray], np.ndarray, Tuple[str, ...]]:
    """Pooled features {pool: (N, D or 2D)} and labels (N,) of one split, eval transform."""
    from ..data.image_dataset import ImagePretrainingDataset
    from ..tasks.image_pretraining import split_transform

    dataset = ImagePretrainingDataset(data, split, split_transform(task.cfg, train=False), num_patches=task.num_patches,
                                      shuffle=False, classes=classes)
    extra = model.modality_encoders["IMAGE"].num_extra_tokens
    means, clss, labels = [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = dataset.collater([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        x = model.extract_features(batch["net_input"]["source"], remove_extra_tokens=False)["x"]  # (B, E+N, D)
        means.append(x[:, extra:].mean(1).float().numpy())
        clss.append((x[:, extra - 1] if extra > 0 else x[:, extra:].mean(1)).float().numpy())
        labels.append(batch["label"].numpy())
    mean, cls = np.concatenate(means), np.concatenate(clss)
    feats = {"mean": mean, "cls": cls, "mean+cls": np.concatenate([mean, cls], axis=1)}
    return feats, np.concatenate(labels), dataset.classes


def probe(checkpoint: str, data: str, pools: Sequence[str] = ("mean",), random_init: bool = False,
          seed: Optional[int] = None, c_grid: Sequence[float] = DEFAULT_C_GRID,
          batch_size: int = 64, splits: Tuple[str, str, str] = ("train", "valid", "test")) -> List[ProbeResult]:
    """Linear-probe results of one model (pretrained weights, or random init) for each pool."""
    start = time.perf_counter()
    model, task = load_models(checkpoint, random_init, seed)
    features = {}
    classes = None
    for split in splits:
        features[split] = extract(model, task, data, split, classes, batch_size)
        classes = features[split][2]  # label valid/test with the train split's classes
    extracted = time.perf_counter() - start
    name = "random init" if random_init else "pretrained"
    results = []
    for pool in pools:
        t0 = time.perf_counter()
        train, valid, test = [(features[s][0][pool], features[s][1]) for s in splits]
        c, valid_acc, test_acc = fit_linear_probe(train, valid, test, c_grid)
        results.append(ProbeResult(name, pool, c, valid_acc, test_acc, train[0].shape[1],
                                   extracted + time.perf_counter() - t0))
        logger.info("%s, %s pooling: valid %.1f%%, test %.1f%% (C=%g)", name, pool, 100 * valid_acc,
                    100 * test_acc, c)
    return results


def pixel_probe(checkpoint: str, data: str, c_grid: Sequence[float] = DEFAULT_C_GRID,
                splits: Tuple[str, str, str] = ("train", "valid", "test")) -> ProbeResult:
    """The same classifier on the flattened, normalised pixels of the evaluation transform."""
    from ..data.image_dataset import ImagePretrainingDataset
    from ..tasks.image_pretraining import split_transform

    start = time.perf_counter()
    _, task = load_models(checkpoint)
    data_by_split, classes = [], None
    for split in splits:
        dataset = ImagePretrainingDataset(data, split, split_transform(task.cfg, train=False), num_patches=task.num_patches,
                                          shuffle=False, classes=classes)
        classes = dataset.classes
        items = [dataset[i] for i in range(len(dataset))]
        data_by_split.append((np.stack([item["source"].flatten().numpy() for item in items]),
                              np.array([item["label"] for item in items])))
    c, valid_acc, test_acc = fit_linear_probe(*data_by_split, c_grid=c_grid)
    logger.info("pixels: valid %.1f%%, test %.1f%% (C=%g)", 100 * valid_acc, 100 * test_acc, c)
    return ProbeResult("pixels (no model)", "-", c, valid_acc, test_acc, data_by_split[0][0].shape[1],
                       time.perf_counter() - start)


def table(results: Sequence[ProbeResult]) -> str:
    lines = ["| model | pooling | features | C | valid top-1 | test top-1 |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.model} | {r.pool} | {r.feature_dim} | {r.c:g} | {100 * r.valid_top1:.1f} % | "
                     f"{100 * r.test_top1:.1f} % |")
    seeded = [r for r in results if r.model.startswith("random init (seed")]
    for pool in dict.fromkeys(r.pool for r in seeded):
        rows = [r for r in seeded if r.pool == pool]
        lines.append(f"| random init, mean ± sd over seeds | {pool} | {rows[0].feature_dim} | - | "
                     f"{probe_options.mean_spread([r.valid_top1 for r in rows])} | "
                     f"{probe_options.mean_spread([r.test_top1 for r in rows])} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d2v-image-probe", description=__doc__,
                                     formatter_class=probe_options.HelpFormatter)
    probe_options.add_probe_arguments(
        parser, checkpoint_help="an image pretraining checkpoint (data2vec_multi, IMAGE)",
        data_help="image-folder root with train/valid/test splits", default_C=DEFAULT_C_GRID,
        default_batch_size=64)
    parser.add_argument("--pool", nargs="+", choices=POOLS, default=["mean", "cls"],
                        help="feature pooling(s) to probe")
    parser.add_argument("--compare-pixels", action="store_true",
                        help="also fit the classifier on the transformed pixels (no model)")
    parser.add_argument("--splits", nargs=3, default=["train", "valid", "test"], metavar=("FIT", "SELECT", "REPORT"))
    probe_options.add_deprecated(parser, "--c-grid", "--C", "C", type=float, nargs="+")
    probe_options.add_deprecated(parser, "--seed", "--seeds", "seeds", type=lambda v: [int(v)])
    return parser


def main(argv: Optional[Sequence[str]] = None) -> List[ProbeResult]:
    args = probe_options.parse_args(build_parser(), argv)

    seeds = args.seeds or [None]          # None: the checkpoint's common.seed
    results: List[ProbeResult] = []
    for random_init in probe_options.models_to_score(args):
        for seed in (seeds if random_init else [None]):
            rows = probe(args.checkpoint, args.data, args.pool, random_init, seed, args.C,
                         args.batch_size, tuple(args.splits))
            if random_init and len(seeds) > 1:
                rows = [replace(r, model=f"random init (seed {seed})") for r in rows]
            results += rows
    if args.compare_pixels:
        results.append(pixel_probe(args.checkpoint, args.data, args.C, tuple(args.splits)))
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=2)
    return results


def cli() -> int:
    from ..data.image_folder import ImageFileError

    return console.run(main, "d2v-image-probe", errors=(console.UserInputError, FileNotFoundError, ImageFileError))


if __name__ == "__main__":
    raise SystemExit(cli())
