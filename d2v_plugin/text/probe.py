"""Topic probe (``d2v-text-probe``): how much a text checkpoint's features know about topics.

The task: which documentation topic does a sentence come from (``examples/make_text_corpus.py``
writes ``{train,valid,test}.txt`` with a ``.label`` per line and the probe classes in
``classes.txt``). For each model, every labelled sentence is encoded as ``<s> pieces </s>``
with the data-bin's sentencepiece model and dictionary, the model's final output
(``extract_features(...)["x"]``) is averaged over the non-pad tokens, and a logistic
regression (features standardised; ``C`` chosen on valid from ``--C``) is trained on the train
sentences and scored on the test sentences.

Scored: the checkpoint and the majority class; with ``--compare-random`` also the *same
architecture* at random initialisation (the checkpoint's model config, fresh weights from
``torch.manual_seed(seed)`` for each of ``--seeds``, default the checkpoint's ``common.seed``;
mean and spread over seeds reported), with ``--random-init`` only those. ``--data`` is the
labelled corpus; the tokenizer and dictionary come from the data-bin the checkpoint was
trained on (its ``task.data``, or ``--data-bin``). Example::

    d2v-text-probe checkpoints/tiny_text/checkpoint_last.pt --data data/text/corpus \\
        --compare-random --seeds 1 2 3 --json probe.json

Flags are the ones every probe command shares (``d2v_plugin/probe_options.py``); the old
``--corpus`` and ``--random-seeds`` still work, with a warning.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .. import console, probe_options
from ..linear_probe import fit_linear_probe

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
DEFAULT_C = (0.01, 0.1, 1.0, 10.0)


@dataclass
class ProbeResult:
    model: str
    valid_accuracy: float
    test_accuracy: float
    C: float


def load_checkpoint(path: str, data_bin: str):
    """(model in eval mode, fairseq cfg, task) of a text checkpoint, with ``task.data`` set to
    ``data_bin`` (the dictionary must be the one the checkpoint was trained with)."""
    import d2v_plugin  # noqa: F401  (registers the model and task)
    from fairseq import checkpoint_utils

    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides={"data": data_bin})
    return models[0].eval(), cfg, task


def random_init_like(cfg, task, seed: int):
    """The checkpoint's architecture with fresh weights (``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    return task.build_model(cfg.model).eval()


@torch.no_grad()
def sentence_features(model, source: torch.Tensor, padding_mask: torch.Tensor,
                      batch_size: int = 256) -> np.ndarray:
    """(N, T) tokens -> (N, D) mean of the final output over the non-pad tokens."""
    out = []
    for start in range(0, source.size(0), batch_size):
        tokens, pad = source[start:start + batch_size], padding_mask[start:start + batch_size]
        x = model.extract_features(tokens, padding_mask=pad, mask=False)["x"].float()  # (b, T, D)
        keep = (~pad).unsqueeze(-1).to(x.dtype)                                       # (b, T, 1)
        out.append((x * keep).sum(1) / keep.sum(1))
    return torch.cat(out).numpy()


def fit_probe(features: Dict[str, np.ndarray], labels: Dict[str, np.ndarray], name: str,
              C_grid: Sequence[float] = DEFAULT_C) -> ProbeResult:
    """Standardise + logistic regression on train; C by valid accuracy; test accuracy."""
    C, valid_acc, test_acc = fit_linear_probe(*[(features[s], labels[s]) for s in ("train", "valid", "test")],
                                              c_grid=C_grid, max_iter=5000)
    return ProbeResult(name, valid_acc, test_acc, float(C))


@torch.no_grad()
def position_variance_share(model, data_bin: str, dictionary, tokens_per_sample: int,
                            split: str = "valid") -> Dict[str, float]:
    """Share of the variance of the features (and of the teacher targets) that position alone
    explains, over the full ``tokens_per_sample`` blocks of ``split``: sum over positions of
    (mean at that position - overall mean)^2 x blocks, divided by the total sum of squares.
    About 0.5 at random init (token and position embeddings have the same scale); near 1
    means the representation encodes where a token is rather than what it is."""
    from ..data.text_dataset import load_text_blocks

    blocks = load_text_blocks(data_bin, split, dictionary, tokens_per_sample)
    full = [blocks[i] for i in range(len(blocks)) if len(blocks[i]) == tokens_per_sample]
    if len(full) < 2:
        return {}
    source = torch.stack(full)                                                      # (N, T)
    encoder = model.modality_encoders["TEXT"]
    outputs = {"features": model.extract_features(source)["x"]}                     # (N, T, D)
    if model.teacher is not None:
        outputs["targets"] = model.teacher_targets(source, encoder.local_features(source), None)

    def share(y: torch.Tensor) -> float:
        y = y.double()
        overall = y.mean((0, 1))
        total = ((y - overall) ** 2).sum()
        by_position = ((y.mean(0) - overall) ** 2).sum() * y.size(0)
        return float(by_position / total)

    return {name: share(y) for name, y in outputs.items()}


def read_classes(corpus: str) -> Optional[List[str]]:
    path = os.path.join(corpus, "classes.txt")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def run_probe(checkpoint: str, data_bin: Optional[str], corpus: str, seeds: Optional[Sequence[int]] = None,
              max_tokens: Optional[int] = None, C_grid: Sequence[float] = DEFAULT_C,
              random_init: Sequence[bool] = (False, True), batch_size: int = 256) -> Dict:
    """Probe the checkpoint and/or untrained models of its architecture (``random_init``: which,
    in order; one untrained model per seed, default the checkpoint's ``common.seed``); returns
    a json-able dict. ``data_bin`` None: the data-bin the checkpoint was trained on."""
    from ..data.text_dataset import encode_labelled_lines

    data_bin = data_bin or _recorded_data_bin(checkpoint)
    model, cfg, task = load_checkpoint(checkpoint, data_bin)
    seeds = list(seeds) if seeds else [int(cfg.common.seed)]
    max_tokens = max_tokens or model.modality_encoders["TEXT"].cfg.max_source_positions
    classes = read_classes(corpus)
    sets = {}
    for split in SPLITS:
        sets[split] = encode_labelled_lines(
            os.path.join(corpus, f"{split}.txt"), os.path.join(corpus, f"{split}.label"), data_bin,
            max_tokens, label_names=classes, dictionary=task.source_dictionary)
        classes = classes or sets[split].label_names
    labels = {s: d.labels.numpy() for s, d in sets.items()}
    counts = np.bincount(labels["train"], minlength=len(classes))
    majority = int(counts.argmax())
    results = [ProbeResult("majority class", float((labels["valid"] == majority).mean()),
                           float((labels["test"] == majority).mean()), float("nan"))]
    models = []
    for untrained in random_init:
        if untrained:
            models += [(f"random init (seed {s})", lambda s=s: random_init_like(cfg, task, s)) for s in seeds]
        else:
            models.append(("pretrained", lambda: model))
    built = []
    for name, build in models:
        start = time.time()
        m = build()
        built.append((name, m))
        feats = {s: sentence_features(m, d.source, d.padding_mask, batch_size) for s, d in sets.items()}
        results.append(fit_probe(feats, labels, name, C_grid))
        logger.info("%s: test accuracy %.3f (%.1f s)", name, results[-1].test_accuracy, time.time() - start)
    randoms = [r for r in results if r.model.startswith("random")]
    pretrained = [r for r in results if r.model == "pretrained"]
    tokens_per_sample = cfg.task.get("tokens_per_sample", None)
    positions = {name: position_variance_share(m, data_bin, task.source_dictionary, tokens_per_sample)
                 for name, m in built[:2]} if tokens_per_sample else {}
    spread = {}
    if randoms:
        tests = [r.test_accuracy for r in randoms]
        spread = {"random_init_test_mean": float(np.mean(tests)),
                  "random_init_test_std": float(np.std(tests, ddof=1)) if len(tests) > 1 else 0.0,
                  "random_init_valid_mean": float(np.mean([r.valid_accuracy for r in randoms]))}
    return {
        "position_variance_share": positions,
        "checkpoint": checkpoint, "num_updates": _num_updates(checkpoint),
        "classes": classes, "sizes": {s: int(len(d.labels)) for s, d in sets.items()},
        "results": [asdict(r) for r in results], **spread,
        "pretrained_minus_best_random": (pretrained[0].test_accuracy - max(r.test_accuracy for r in randoms)
                                         if randoms and pretrained else None),
    }


def _recorded_data_bin(checkpoint: str) -> str:
    """The checkpoint's ``task.data`` (its dictionary and sentencepiece model), if it still exists."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    data = ((state.get("cfg") or {}).get("task") or {}).get("data")
    if not data or not os.path.isfile(os.path.join(data, "dict.txt")):
        raise console.UserInputError(f"{checkpoint}: its task.data {data!r} holds no dict.txt; pass --data-bin "
                                     f"(the d2v-text-prep data-bin it was trained with)")
    return data


def _num_updates(checkpoint: str) -> Optional[int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return (state.get("optimizer_history") or [{}])[-1].get("num_updates")


def format_table(report: Dict) -> str:
    sizes = report["sizes"]
    lines = [f"topic probe: {len(report['classes'])} classes, train/valid/test = "
             f"{sizes['train']}/{sizes['valid']}/{sizes['test']} sentences; checkpoint "
             f"{report['checkpoint']} ({report['num_updates']} updates)", "",
             "| features | valid acc | test acc | C |", "|---|---|---|---|"]
    for r in report["results"]:
        c = "" if r["C"] != r["C"] else f"{r['C']:g}"
        lines.append(f"| {r['model']} | {100 * r['valid_accuracy']:.1f} % | {100 * r['test_accuracy']:.1f} % | {c} |")
    randoms = [r for r in report["results"] if r["model"].startswith("random init")]
    if len(randoms) > 1:
        lines.append(f"| random init, mean ± sd over seeds | "
                     f"{probe_options.mean_spread([r['valid_accuracy'] for r in randoms])} | "
                     f"{probe_options.mean_spread([r['test_accuracy'] for r in randoms])} | |")
    for name, shares in report.get("position_variance_share", {}).items():
        if shares:
            lines.append(f"\nshare of variance explained by position alone ({name}, valid blocks): " +
                         ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="d2v-text-probe", description=__doc__,
                                formatter_class=probe_options.HelpFormatter)
    probe_options.add_probe_arguments(
        p, checkpoint_help="a text checkpoint (data2vec_text_pretraining)",
        data_help="folder with {train,valid,test}.txt + .label (and classes.txt)",
        default_C=DEFAULT_C, default_batch_size=256)
    p.add_argument("--data-bin", default=None,
                   help="d2v-text-prep's data-bin (spm.model, dict.txt) the checkpoint was trained "
                        "with (default: the checkpoint's task.data)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="truncate sentences (default: the model's max_source_positions)")
    probe_options.add_deprecated(p, "--corpus", "--data", "data")
    probe_options.add_deprecated(p, "--random-seeds", "--compare-random --seeds", "seeds", type=int,
                                 nargs="*", also={"compare_random": True})
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = probe_options.parse_args(build_parser(), argv)
    if args.seeds == []:                    # the old `--random-seeds` with no seed: no baseline
        args.seeds, args.compare_random = None, False
    report = run_probe(args.checkpoint, args.data_bin, args.data, args.seeds, args.max_tokens, args.C,
                       probe_options.models_to_score(args), args.batch_size)
    print(format_table(report))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


def cli() -> int:
    return console.run(main, "d2v-text-probe")


if __name__ == "__main__":
    sys.exit(cli())
