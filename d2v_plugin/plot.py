"""``d2v-plot``: training curves of one or more fairseq logs as a PNG.

Example::

    fairseq-hydra-train ... common.log_format=json 2>&1 | tee run.log   # or hydra's train.log
    d2v-plot run.log [other_run.log ...] -o curves.png

Five panels against the update count, one line per log: ``loss`` (validation loss as
markers where the log has validation lines), ``target_var`` and ``pred_var`` with the
collapse thresholds drawn (training stops below ``model.min_target_var`` /
``model.min_pred_var`` once ``model.collapse_check_after`` updates have passed), the teacher's
EMA ``ema_decay`` (plotted as the decay; logs of the reference implementation, which logs it
x1000, are scaled back) and the learning rate ``lr``.
Thresholds come from the config fairseq prints at the start of the log, else the model's
defaults; ``--min-target-var`` / ``--min-pred-var`` override both. Reads the ``json`` and
``simple`` log formats (not tqdm). Needs matplotlib: ``pip install 'd2v_plugin[plot]'``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import console
from .training_log import TrainingLog, read_log

logger = logging.getLogger(__name__)

PANELS = ("loss", "target_var", "pred_var", "ema_decay", "lr")
THRESHOLDS = {"target_var": "min_target_var", "pred_var": "min_pred_var"}


def model_defaults() -> Dict[str, float]:
    """The collapse guard's defaults, from the model config dataclass (one source of truth)."""
    from .models.config import Data2Vec2Config

    keys = ("min_target_var", "min_pred_var", "collapse_check_after")
    return {f.name: f.default for f in fields(Data2Vec2Config) if f.name in keys}


def thresholds_for(log: TrainingLog, overrides: Dict[str, Optional[float]]) -> Dict[str, float]:
    merged = {**model_defaults(), **log.config}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return merged


def _series(rows: List[Dict[str, float]], key: str):
    points = [(r["num_updates"], r[key]) for r in rows if key in r]
    if key == "ema_decay":   # the reference implementation logs decay * 1000; ours the decay
        points = [(u, v / 1000.0 if v > 1.0 else v) for u, v in points]
    return [p[0] for p in points], [p[1] for p in points]


def _panel_keys(rows: List[Dict[str, float]], key: str) -> List[str]:
    """The logged keys a panel draws: ``lr`` is one key with a single optimizer, one ``lr_<group>``
    per parameter group with fairseq's composite optimizer (image and text recipes: ``lr_default``,
    ``lr_no_decay``)."""
    logged = {k for r in rows for k in r}
    if key == "lr" and "lr" not in logged:
        return sorted(k for k in logged if k.startswith("lr_"))
    return [key] if key in logged else []


def make_figure(logs: Sequence[TrainingLog], thresholds: Sequence[Dict[str, float]]):
    """A matplotlib Figure with one axis per ``PANELS`` entry, every log drawn on each."""
    try:
        from matplotlib.figure import Figure   # no pyplot: no global state, no display needed
    except ImportError:
        raise console.UserInputError("d2v-plot needs matplotlib: pip install 'd2v_plugin[plot]'") from None
    fig = Figure(figsize=(9, 2.3 * len(PANELS)), layout="constrained")
    axes = fig.subplots(len(PANELS), 1, sharex=True)
    for log, limits in zip(logs, thresholds):
        label = log.path.name if len({l.path.name for l in logs}) == len(logs) else str(log.path)
        for ax, key in zip(axes, PANELS):
            for series_key in _panel_keys(log.train, key):
                x, y = _series(log.train, series_key)
                name = label if series_key == key else f"{label} {series_key}"
                line, = ax.plot(x, y, label=name, linewidth=1)
            if key == "loss" and _panel_keys(log.train, key):
                for subset, rows in log.valid.items():
                    vx, vy = _series(rows, "loss")
                    if vx:
                        ax.plot(vx, vy, "o", color=line.get_color(), label=f"{label} ({subset})")
    for ax, key in zip(axes, PANELS):
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if key in THRESHOLDS:
            for value in sorted({t[THRESHOLDS[key]] for t in thresholds}):
                ax.axhline(value, color="red", linestyle="--", linewidth=1,
                           label=f"collapse stop: {THRESHOLDS[key]}={value:g}")
            for after in sorted({t["collapse_check_after"] for t in thresholds}):
                if ax.get_xlim()[1] >= after:
                    ax.axvline(after, color="red", linestyle=":", linewidth=1,
                               label=f"guard armed after {after:g} updates")
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        if key == "ema_decay":
            ax.ticklabel_format(axis="y", useOffset=False)   # 0.99901, not 1e-6 + 9.99e-1
        if ax.has_data():
            ax.legend(fontsize="small", loc="best")
    axes[-1].set_xlabel("update")
    return fig


def plot_logs(logs: Sequence[TrainingLog], out: Path, thresholds: Sequence[Dict[str, float]]) -> Path:
    """Draw ``PANELS`` for every log into ``out`` (PNG); returns ``out``."""
    fig = make_figure(logs, thresholds)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="d2v-plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", metavar="LOG", help="fairseq log files (json or simple format)")
    p.add_argument("-o", "--output", default="training_curves.png", help="PNG to write (default: %(default)s)")
    p.add_argument("--min-target-var", type=float, default=None,
                   help="threshold to draw (default: from the log's config, else the model default)")
    p.add_argument("--min-pred-var", type=float, default=None, help="as --min-target-var")
    p.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = build_parser().parse_args(argv)
    logs = [read_log(path) for path in args.logs]
    overrides = {"min_target_var": args.min_target_var, "min_pred_var": args.min_pred_var}
    limits = [thresholds_for(log, overrides) for log in logs]
    for log in logs:
        last = log.train[-1]
        print(f"{log.path}: {len(log.train)} training rows up to update {last['num_updates']:g}, "
              f"validation rows: {', '.join(f'{k} {len(v)}' for k, v in log.valid.items()) or 'none'}")
    out = plot_logs(logs, Path(args.output), limits)
    print(f"wrote {out}")
    return out


def cli() -> int:
    return console.run(main, "d2v-plot")


if __name__ == "__main__":
    sys.exit(cli())
