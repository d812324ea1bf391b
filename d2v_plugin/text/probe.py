"""Topic probe (``d2v-text-probe``): how much a text checkpoint's features know about topics.

The task: which documentation topic does a sentence come from (``examples/make_text_corpus.py``
writes ``{train,valid,test}.txt`` with a ``.label`` per line and the probe classes in
``classes.txt``). For each model, every labelled sentence is encoded as ``<s> pieces </s>``
with the data-bin's sentencepiece model and dictionary, the model's final output
(``extract_features(...)["x"]``) is averaged over the non-pad tokens, and a logistic
regression (features standardised; ``C`` chosen on valid from ``--C``) is trained on the train
sentences and scored on the test sentences.

Compared: the checkpoint, and the *same architecture* at random initialisation (the
checkpoint's model config, fresh weights from ``torch.manual_seed(seed)`` for each
``--random-seeds``), plus the majority class. Example::

    d2v-text-probe checkpoints/tiny_text/checkpoint_last.pt --data-bin data/text/data-bin \\
        --corpus data/text/corpus --random-seeds 1 2 3 --json probe.json
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

from .. import console
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


def run_probe(checkpoint: str, data_bin: str, corpus: str, random_seeds: Sequence[int] = (1,),
              max_tokens: Optional[int] = None, C_grid: Sequence[float] = DEFAULT_C) -> Dict:
    """Probe the checkpoint and random inits of its architecture; returns a json-able dict."""
    from ..data.text_dataset import encode_labelled_lines

    model, cfg, task = load_checkpoint(checkpoint, data_bin)
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
    models = [("pretrained", model)] + [(f"random init (seed {s})", random_init_like(cfg, task, s))
                                        for s in random_seeds]
    for name, m in models:
        start = time.time()
        feats = {s: sentence_features(m, d.source, d.padding_mask) for s, d in sets.items()}
        results.append(fit_probe(feats, labels, name, C_grid))
        logger.info("%s: test accuracy %.3f (%.1f s)", name, results[-1].test_accuracy, time.time() - start)
    randoms = [r.test_accuracy for r in results if r.model.startswith("random")]
    tokens_per_sample = cfg.task.get("tokens_per_sample", None)
    positions = {name: position_variance_share(m, data_bin, task.source_dictionary, tokens_per_sample)
                 for name, m in models[:2]} if tokens_per_sample else {}
    return {
        "position_variance_share": positions,
        "checkpoint": checkpoint, "num_updates": _num_updates(checkpoint),
        "classes": classes, "sizes": {s: int(len(d.labels)) for s, d in sets.items()},
        "results": [asdict(r) for r in results],
        "pretrained_minus_best_random": results[1].test_accuracy - max(randoms) if randoms else None,
    }


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
    for name, shares in report.get("position_variance_share", {}).items():
        if shares:
            lines.append(f"\nshare of variance explained by position alone ({name}, valid blocks): " +
                         ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    p = argparse.ArgumentParser(prog="d2v-text-probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a text checkpoint (data2vec_text_pretraining)")
    p.add_argument("--data-bin", required=True, help="d2v-text-prep's data-bin (spm.model, dict.txt)")
    p.add_argument("--corpus", required=True,
                   help="folder with {train,valid,test}.txt + .label (and classes.txt)")
    p.add_argument("--random-seeds", type=int, nargs="*", default=[1],
                   help="seeds of the random-init baselines (same architecture)")
    p.add_argument("--max-tokens", type=int, help="truncate sentences (default: max_source_positions)")
    p.add_argument("--C", type=float, nargs="+", default=list(DEFAULT_C), help="regularisation grid")
    p.add_argument("--json", help="also write the report here")
    p.add_argument("--log-level", default="WARNING", help="logging level of the command (console script)")
    args = p.parse_args(argv)
    report = run_probe(args.checkpoint, args.data_bin, args.corpus, args.random_seeds,
                       args.max_tokens, args.C)
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
