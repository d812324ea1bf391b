"""Training statistics from fairseq console logs (``common.log_format=json`` or ``simple``).

fairseq prints one line per ``log_interval`` updates under the logger ``train_inner``, one per
validation under the subset's name (``valid``, ``dev_other``; keys prefixed with it) and its
resolved config once at the start.
``read_log`` returns those rows as floats; the tqdm format (an interactive progress bar) writes
no such lines, so a log without rows is an error that says which formats work.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from .console import UserInputError

# `[2026-12-04 05:00:00,000][train_inner][INFO] - {...}` (hydra) or `... | INFO | train_inner | {...}`
_TAG = re.compile(r"\]\[([\w.]+)\]\[[A-Z]+\] - |\| [A-Z]+ \| ([\w.]+) \| ")
_SIMPLE_PAIR = re.compile(r"(\w+)=([^,\s]+)")              # train_inner: `loss=3.2, lr=0.0005`
_SIMPLE_PIPE = re.compile(r"\| (\w+) ([-+0-9.eE]+|inf|nan)(?= \||$)")  # valid: `| loss 3.2 | ...`
_CONFIG_VALUE = r"'{}': ([-+0-9.eE]+)"


@dataclass
class TrainingLog:
    """Rows of one log: ``train`` (train_inner) and ``valid``, each a list of {stat: float}."""

    path: Path
    train: List[Dict[str, float]] = field(default_factory=list)
    valid: Dict[str, List[Dict[str, float]]] = field(default_factory=dict)  # subset -> rows, keys unprefixed
    config: Dict[str, float] = field(default_factory=dict)   # numeric model settings found in the log


def _floats(stats: Dict) -> Dict[str, float]:
    out = {}
    for key, value in stats.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _parse_stats(message: str) -> Optional[Dict[str, float]]:
    start = message.find("{")
    if start >= 0:
        try:
            return _floats(json.loads(message[start:]))
        except json.JSONDecodeError:
            return None
    if " valid on " in message:            # simple format, validation: `... | loss 3.2 | ...`
        return _floats(dict(_SIMPLE_PIPE.findall(message.rstrip()))) or None
    if "=" in message:                     # simple format, training: `epoch 001:  10 / 50 loss=3.2, ...`
        return _floats(dict(_SIMPLE_PAIR.findall(message))) or None
    return None


def read_log(path, config_keys=("min_target_var", "min_pred_var", "collapse_check_after")) -> TrainingLog:
    """Parse one fairseq log file; UserInputError if it holds no training rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log not found: {path}")
    log = TrainingLog(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not log.config and "'min_target_var'" in line:   # fairseq's config dump
                for key in config_keys:
                    m = re.search(_CONFIG_VALUE.format(key), line)
                    if m:
                        log.config[key] = ast.literal_eval(m.group(1))
            match = _TAG.search(line)
            if not match:
                continue
            tag = match.group(1) or match.group(2)
            stats = _parse_stats(line[match.end():])
            if not stats:
                continue
            if tag == "train_inner" and "num_updates" in stats:
                log.train.append(stats)
            elif tag == "train":                          # the epoch summary: not a curve point
                continue
            elif f"{tag}_num_updates" in stats:           # json: keys prefixed with the subset
                log.valid.setdefault(tag, []).append(
                    {k[len(tag) + 1:]: v for k, v in stats.items() if k.startswith(f"{tag}_")})
            elif " valid on " in line and "num_updates" in stats:   # simple format: unprefixed
                log.valid.setdefault(tag, []).append(stats)
    if not log.train:
        raise UserInputError(
            f"{path}: no training statistics found (fairseq `train_inner` lines). Train with "
            f"common.log_format=json (or simple); the tqdm progress bar writes none")
    return log
