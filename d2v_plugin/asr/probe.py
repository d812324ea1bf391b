"""SUPERB-style probes of a frozen speech upstream (``d2v-speech-probe``): phoneme recognition
(PR) and speaker identification (SID) from every layer's output.

Example (the embedded corpus, ``examples/make_speech_corpus.py --heldout-voices 2``)::

    d2v-speech-probe checkpoints/tiny_audio/checkpoint_last.pt --data data/speech_corpus \\
        --compare-random --json probe.json

Every layer's output of the frozen upstream (``layer_features``: block input + every block
output) is extracted once per split and cached on disk; the heads then train on the cache:

* PR: a learned softmax-weighted sum of the L layers (each layer normalised with a
  parameter-free LayerNorm first) -> linear -> CTC over the phonemes of ``dict.phn.txt``
  (+ blank). Trained on train; PER (greedy CTC, corpus-pooled edit distance) on valid, test
  and, when the corpus has held-out voices, ``test_unseen`` (speakers in no other split).
* SID: the same kind of weighted sum (its own weights), mean-pooled over the frames ->
  linear -> softmax over the training speakers (``<split>.spk``); accuracy on valid and test
  (same speakers as train). The pooled layers are standardised with train statistics first
  (mean-pooled LayerNorm'ed frames differ little between utterances; unscaled, the linear
  head does not even fit train in its step budget).

Recipe (fixed; ``--pr-steps`` etc. exist for experiments): Adam (betas 0.9/0.999, no weight
decay), layer weights and linear layer trained together from zero layer logits (equal
weights) and PyTorch's default linear init; PR 800 steps of 16 random training utterances,
SID 300 full-batch steps on the mean-pooled utterances. The learning rate is chosen on
valid only (lowest PER, highest accuracy; ties keep the earlier grid entry) from ``--pr-lrs``
(0.03 0.1 0.3: a linear CTC head leaves its all-blank start slowly, small lrs never get
there in 800 steps) and ``--sid-lrs`` (0.01 0.1). Each seed of ``--seeds`` re-initialises
the heads and the batch order (and, with ``--random-init``, the random upstream: seed S is
``torch.manual_seed(S)`` before building the model, so S = the config's ``common.seed`` is
where pretraining started); the report gives mean and standard deviation over seeds.

Python: ``probe(checkpoint, data, ...)`` returns the result dict the JSON holds.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import console
from .layer_features import SplitFeatures, cache_key, file_sha256, load_upstream, split_features
from .phoneme_labels import (BLANK, greedy_ctc_decode, phoneme_error_rate, read_dictionary, read_phonemes,
                             read_speakers)

logger = logging.getLogger(__name__)

JSON_VERSION = 1
UNSEEN_SPLIT = "test_unseen"


@dataclass
class Recipe:
    """The fixed head-training recipe (documented in the module doc)."""

    pr_steps: int = 800
    pr_batch: int = 16
    pr_lrs: Sequence[float] = (0.03, 0.1, 0.3)
    sid_steps: int = 300
    sid_lrs: Sequence[float] = (0.01, 0.1)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "d2v_plugin", "speech_probe")


# ------------------------------------------------------------------ heads


class WeightedLayers(nn.Module):
    """softmax(w)-weighted sum of L parameter-free-LayerNorm'ed layers (SUPERB's featurizer)."""

    def __init__(self, num_layers: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> torch.Tensor:
        return self.logits.softmax(0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., L, D) normalised -> (..., D)
        return torch.einsum("...ld,l->...d", h, self.weights())


def _normed(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:])


class _Frames:
    """A split's frames, each layer normalised once (float32, or float16 above 1 GB), by utterance."""

    def __init__(self, split: SplitFeatures, chunk: int = 8192):
        feats = torch.from_numpy(np.ascontiguousarray(split.feats))
        dtype = torch.float32 if feats.numel() * 4 < 2 ** 30 else torch.float16
        self.normed = torch.cat([_normed(feats[i:i + chunk]).to(dtype) for i in range(0, len(feats), chunk)])
        self.offsets = split.offsets.tolist()
        self.lengths = split.lengths.tolist()

    @property
    def shape(self):
        return self.normed.shape

    def batch(self, idx: Sequence[int]):
        seqs = [self.normed[self.offsets[i]:self.offsets[i + 1]].float() for i in idx]
        lengths = torch.tensor([s.shape[0] for s in seqs])
        return nn.utils.rnn.pad_sequence(seqs, batch_first=True), lengths  # (B, T, L, D)

    def pooled(self) -> torch.Tensor:  # (N, L, D) mean over the frames of each utterance
        return torch.stack([self.normed[a:b].float().mean(0) for a, b in zip(self.offsets, self.offsets[1:])])


class PhonemeHead(nn.Module):
    def __init__(self, num_layers: int, dim: int, num_phonemes: int):
        super().__init__()
        self.layers = WeightedLayers(num_layers)
        self.proj = nn.Linear(dim, num_phonemes + 1)  # + the CTC blank

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(self.layers(h)).log_softmax(-1)


def train_phoneme_head(train: _Frames, labels: List[List[int]], num_phonemes: int, lr: float, steps: int,
                       batch: int, seed: int) -> PhonemeHead:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    L, D = train.shape[1:]
    head = PhonemeHead(L, D, num_phonemes)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    n = len(labels)
    for step in range(steps):
        idx = torch.randint(n, (min(batch, n),), generator=g).tolist()
        h, lengths = train.batch(idx)
        log_probs = head(h).transpose(0, 1)  # (T, B, C)
        targets = torch.cat([torch.tensor(labels[i]) for i in idx])
        target_lengths = torch.tensor([len(labels[i]) for i in idx])
        loss = F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=BLANK, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"PR head: loss {loss.item()} at step {step} (lr {lr})")
    return head


@torch.no_grad()
def phoneme_error(head: PhonemeHead, frames: _Frames, labels: List[List[int]], chunk: int = 32) -> float:
    hyps = []
    for start in range(0, len(labels), chunk):
        idx = list(range(start, min(start + chunk, len(labels))))
        h, lengths = frames.batch(idx)
        emissions = head(h)
        hyps += [greedy_ctc_decode(emissions[b, :lengths[b]]) for b in range(len(idx))]
    return phoneme_error_rate(labels, hyps).rate


def train_speaker_head(pooled: torch.Tensor, targets: torch.Tensor, num_speakers: int, lr: float, steps: int,
                       seed: int) -> nn.Module:
    torch.manual_seed(seed)
    head = nn.Sequential(WeightedLayers(pooled.shape[1]), nn.Linear(pooled.shape[2], num_speakers))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(head(pooled), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


@torch.no_grad()
def accuracy(head: nn.Module, pooled: torch.Tensor, targets: torch.Tensor) -> float:
    return 100.0 * float((head(pooled).argmax(-1) == targets).float().mean())


# ------------------------------------------------------------------ data


@dataclass
class CorpusLabels:
    splits: List[str]                     # probed splits: train, valid, test[, test_unseen]
    phonemes: List[str]                   # dictionary
    phn: Dict[str, List[List[int]]]
    speakers: List[str]                   # train speakers (SID classes)
    spk: Dict[str, List[int]]             # SID splits only


def read_corpus(data: str) -> CorpusLabels:
    """Labels of every split, checked against the manifests before any extraction starts."""
    from ..data.manifest import read_manifest

    splits = ["train", "valid", "test"] + ([UNSEEN_SPLIT] if os.path.isfile(os.path.join(data, f"{UNSEEN_SPLIT}.tsv")) else [])
    symbols = read_dictionary(os.path.join(data, "dict.phn.txt"))
    phn, spk_names = {}, {}
    for split in splits:
        n = len(read_manifest(os.path.join(data, f"{split}.tsv")).entries)
        phn[split] = read_phonemes(os.path.join(data, f"{split}.phn"), symbols, n)
        if split != UNSEEN_SPLIT:
            spk_names[split] = read_speakers(os.path.join(data, f"{split}.spk"), n)
    speakers = sorted(set(spk_names["train"]))
    index = {s: i for i, s in enumerate(speakers)}
    for split in ("valid", "test"):
        unseen = sorted(set(spk_names[split]) - set(speakers))
        if unseen:
            raise console.UserInputError(f"{os.path.join(data, split + '.spk')}: speaker(s) {unseen} not in "
                                         f"train.spk (speaker identification needs seen speakers)")
    spk = {s: [index[name] for name in names] for s, names in spk_names.items()}
    return CorpusLabels(splits, symbols, phn, speakers, spk)


# ------------------------------------------------------------------ probe


def _mean_std(values: Sequence[float]) -> Dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": list(values)}


def probe(checkpoint: str, data: str, random_init: bool = False, seeds: Sequence[int] = (1,),
          cache_dir: Optional[str] = None, batch_size: int = 1, recipe: Recipe = Recipe(),
          tasks: Sequence[str] = ("pr", "sid")) -> Dict:
    """Probe one model (the checkpoint, or its architecture at random init) and return the report
    dict (what ``--json`` writes per model). ``cache_dir=None`` uses ``default_cache_dir()``,
    ``""`` disables the cache."""
    start = time.perf_counter()
    labels = read_corpus(data)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    sha = file_sha256(checkpoint)
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    runs: Dict[str, Dict[str, List[float]]] = {}
    layer_weights: Dict[str, List[List[float]]] = {"pr": [], "sid": []}
    chosen: Dict[str, List[float]] = {"pr": [], "sid": []}
    timing = {"extraction": 0.0, "pr": 0.0, "sid": 0.0}
    cached_splits, extracted = [], 0
    upstream = {}
    feats: Dict[str, SplitFeatures] = {}
    info = {}
    for i, seed in enumerate(seeds):
        if i == 0 or random_init:  # a random upstream per seed; a checkpoint's features once
            def load(init_seed=seed):  # loaded once per seed, and only if a split is not cached
                if init_seed not in upstream:
                    upstream[init_seed] = load_upstream(checkpoint, random_init, init_seed)
                return upstream[init_seed]

            for split in labels.splits:
                manifest = os.path.join(data, f"{split}.tsv")
                key = cache_key(sha, random_init, seed, manifest, batch_size)
                feats[split] = split_features(load, manifest, cache_dir, key, batch_size,
                                              progress=f"{'random init ' if random_init else ''}{split}",
                                              describe={"checkpoint": os.path.abspath(checkpoint),
                                                        "checkpoint_sha256": sha, "random_init": random_init,
                                                        "seed": seed if random_init else None,
                                                        "batch_size": batch_size})
                timing["extraction"] += feats[split].seconds
                if feats[split].cached:
                    cached_splits.append(split)
                else:
                    extracted += 1
            if not info:
                up = load()
                info = {"family": up.family, "num_layers": int(feats["train"].feats.shape[1]),
                        "dim": int(feats["train"].feats.shape[2])}
            upstream.clear()
            frames = {s: _Frames(f) for s, f in feats.items()}
            for s in labels.splits:
                if len(frames[s].lengths) != len(labels.phn[s]):
                    raise RuntimeError(f"{s}: {len(frames[s].lengths)} feature rows for {len(labels.phn[s])} labels")
        if "pr" in tasks:
            t0 = time.perf_counter()
            best = None
            for lr in recipe.pr_lrs:
                head = train_phoneme_head(frames["train"], labels.phn["train"], len(labels.phonemes), lr,
                                          recipe.pr_steps, recipe.pr_batch, seed)
                valid = phoneme_error(head, frames["valid"], labels.phn["valid"])
                logger.info("seed %d PR lr %g: valid PER %.2f", seed, lr, valid)
                if best is None or valid < best[0]:
                    best = (valid, lr, head)
            valid, lr, head = best
            scores = {"valid": valid}
            for s in labels.splits[2:]:
                scores[s] = phoneme_error(head, frames[s], labels.phn[s])
            for s, v in scores.items():
                runs.setdefault(f"pr_{s}", []).append(v)
            chosen["pr"].append(lr)
            layer_weights["pr"].append(head.layers.weights().tolist())
            timing["pr"] += time.perf_counter() - t0
        if "sid" in tasks:
            t0 = time.perf_counter()
            pooled = {s: frames[s].pooled() for s in ("train", "valid", "test")}
            mean, std = pooled["train"].mean(0), pooled["train"].std(0).clamp_min(1e-5)
            pooled = {s: (x - mean) / std for s, x in pooled.items()}  # standardised with train statistics
            targets = {s: torch.tensor(labels.spk[s]) for s in pooled}
            best = None
            for lr in recipe.sid_lrs:
                head = train_speaker_head(pooled["train"], targets["train"], len(labels.speakers), lr,
                                          recipe.sid_steps, seed)
                valid = accuracy(head, pooled["valid"], targets["valid"])
                if best is None or valid > best[0]:
                    best = (valid, lr, head)
            valid, lr, head = best
            runs.setdefault("sid_valid", []).append(valid)
            runs.setdefault("sid_test", []).append(accuracy(head, pooled["test"], targets["test"]))
            chosen["sid"].append(lr)
            layer_weights["sid"].append(head[0].weights().tolist())
            timing["sid"] += time.perf_counter() - t0
    report = {
        "model": "random init" if random_init else "pretrained",
        "checkpoint": os.path.abspath(checkpoint), "checkpoint_sha256": sha, **info,
        "data": os.path.abspath(data), "splits": {s: len(labels.phn[s]) for s in labels.splits},
        "num_phonemes": len(labels.phonemes), "num_speakers": len(labels.speakers),
        "seeds": list(seeds), "recipe": {k: list(v) if isinstance(v, (list, tuple)) else v
                                         for k, v in asdict(recipe).items()},
        "cache": {"dir": cache_dir or None, "cached_splits": cached_splits, "extracted_splits": extracted},
    }
    if "pr" in tasks:
        report["pr"] = {"per": {s: _mean_std(runs[f"pr_{s}"]) for s in labels.splits[1:]},
                        "lr": chosen["pr"], "layer_weights": _mean_weights(layer_weights["pr"]),
                        "layer_weights_per_seed": layer_weights["pr"]}
    if "sid" in tasks:
        report["sid"] = {"accuracy": {s: _mean_std(runs[f"sid_{s}"]) for s in ("valid", "test")},
                         "lr": chosen["sid"], "layer_weights": _mean_weights(layer_weights["sid"]),
                         "layer_weights_per_seed": layer_weights["sid"]}
    timing["total"] = time.perf_counter() - start
    report["seconds"] = {k: round(v, 2) for k, v in timing.items()}
    return report


def _mean_weights(per_seed: List[List[float]]) -> List[float]:
    return [statistics.fmean(col) for col in zip(*per_seed)] if per_seed else []


# ------------------------------------------------------------------ report


def _fmt(stat: Optional[Dict], digits: int = 1) -> str:
    if stat is None:
        return "-"
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if len(stat["runs"]) > 1 else "")


def table(reports: Sequence[Dict]) -> str:
    lines = ["| model | PER valid | PER test | PER test_unseen | SID valid | SID test | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in reports:
        per = r.get("pr", {}).get("per", {})
        sid = r.get("sid", {}).get("accuracy", {})
        lines.append(f"| {r['model']} | {_fmt(per.get('valid'))} % | {_fmt(per.get('test'))} % | "
                     f"{_fmt(per.get(UNSEEN_SPLIT))}{' %' if UNSEEN_SPLIT in per else ''} | "
                     f"{_fmt(sid.get('valid'))} % | {_fmt(sid.get('test'))} % | {r['seconds']['total']:.0f} |")
    for r in reports:
        for task in ("pr", "sid"):
            if task in r:
                w = " ".join(f"{x:.2f}" for x in r[task]["layer_weights"])
                lines.append(f"{r['model']} {task.upper()} layer weights (input, block 1..{len(r[task]['layer_weights']) - 1}): "
                             f"{w}; lr {', '.join(f'{x:g}' for x in r[task]['lr'])}")
    return "\n".join(lines)


def write_json(path: str, reports: Sequence[Dict], argv: Sequence[str]) -> None:
    """Atomic write (a killed run never leaves half a file); NaN/inf are refused, not written."""
    doc = {"version": JSON_VERSION, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "argv": list(argv), "results": list(reports)}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, allow_nan=False)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    p = argparse.ArgumentParser(prog="d2v-speech-probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="data2vec_multi (AUDIO), wav2vec2 or wav2vec_ctc checkpoint")
    p.add_argument("--data", required=True, help="corpus with train/valid/test .tsv/.phn/.spk and dict.phn.txt "
                                                  "(examples/make_speech_corpus.py); test_unseen is scored if present")
    p.add_argument("--random-init", action="store_true", help="score only the same architecture untrained")
    p.add_argument("--compare-random", action="store_true", help="score the checkpoint and random init")
    p.add_argument("--seeds", type=int, nargs="+", default=[1],
                   help="head seeds (and random-init seeds); mean and spread are reported")
    p.add_argument("--tasks", nargs="+", choices=("pr", "sid"), default=["pr", "sid"], help="heads to train")
    p.add_argument("--cache-dir", default=default_cache_dir(), help="feature cache ('' to disable)")
    p.add_argument("--batch-size", type=int, default=1,
                   help="utterances per extraction batch (>1 pads, which changes features slightly)")
    p.add_argument("--pr-steps", type=int, default=Recipe.pr_steps, help="PR head Adam steps (16 utterances each)")
    p.add_argument("--pr-lrs", type=float, nargs="+", default=list(Recipe.pr_lrs),
                   help="PR learning rates tried; the lowest valid PER wins")
    p.add_argument("--sid-steps", type=int, default=Recipe.sid_steps, help="SID head full-batch Adam steps")
    p.add_argument("--sid-lrs", type=float, nargs="+", default=list(Recipe.sid_lrs),
                   help="SID learning rates tried; the highest valid accuracy wins")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--log-level", default="INFO", help="logging level of the console script")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    recipe = Recipe(args.pr_steps, Recipe.pr_batch, tuple(args.pr_lrs), args.sid_steps, tuple(args.sid_lrs))
    kinds = [True] if args.random_init else ([False, True] if args.compare_random else [False])
    reports = [probe(args.checkpoint, args.data, k, args.seeds, args.cache_dir, args.batch_size, recipe, args.tasks)
               for k in kinds]
    print(table(reports))
    if args.json:
        write_json(args.json, reports, sys.argv[1:] if argv is None else argv)
        print(f"wrote {args.json}")
    return reports


def cli() -> int:
    from ..data.audio_dataset import AudioFileError
    from ..data.manifest import ManifestError

    return console.run(main, "d2v-speech-probe",
                       (console.UserInputError, FileNotFoundError, ManifestError, AudioFileError))


if __name__ == "__main__":
    sys.exit(cli())
