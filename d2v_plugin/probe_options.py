"""The flag vocabulary every probe command shares (``d2v-image-probe``, ``d2v-text-probe``, ...).

CHECKPOINT; ``--data DIR``; ``--random-init`` (score only the same architecture untrained);
``--compare-random`` (score the checkpoint and the untrained architecture); ``--seeds S ...``
(one untrained model per seed, mean and spread reported; default: the checkpoint's
``common.seed``, the weights its pretraining started from); ``--C`` (the logistic-regression
grid, chosen on valid); ``--batch-size``; ``--json PATH``; ``--log-level``. Every ``--help``
shows the defaults. Spellings a command used before are kept as deprecated aliases: they
work and print a warning naming the new flag.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from typing import List, Optional, Sequence


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default."""


class DeprecatedAlias(argparse.Action):
    """An old spelling: stores into the new option's ``dest`` (plus ``also``) and warns."""

    def __init__(self, option_strings, dest, new: str, also: Optional[dict] = None, **kwargs):
        self.new, self.also = new, also or {}
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated, use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)
        for key, value in self.also.items():
            setattr(namespace, key, value)


def add_probe_arguments(parser: argparse.ArgumentParser, *, checkpoint_help: str, data_help: str,
                        default_C: Sequence[float], default_batch_size: int) -> None:
    parser.add_argument("checkpoint", help=checkpoint_help)
    parser.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS, help=f"{data_help} (required)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--random-init", action="store_true",
                       help="score only the same architecture untrained (one model per --seeds)")
    which.add_argument("--compare-random", action="store_true",
                       help="score the checkpoint and the same architecture untrained")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="seeds of the untrained models, several give mean and spread; None: "
                             "the checkpoint's common.seed (the weights its pretraining started from)")
    parser.add_argument("--C", type=float, nargs="+", default=list(default_C),
                        help="logistic-regression inverse regularisation grid, chosen on valid")
    parser.add_argument("--batch-size", type=int, default=default_batch_size, help="examples per forward pass")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the report here")
    parser.add_argument("--log-level", default="INFO", help="logging level")


def add_deprecated(parser: argparse.ArgumentParser, old: str, new: str, dest: str,
                   also: Optional[dict] = None, **kwargs) -> None:
    """Accept ``old`` as a hidden alias of ``new`` (``dest`` is the new option's attribute)."""
    parser.add_argument(old, dest=dest, action=DeprecatedAlias, new=new, also=also,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args`` that also requires ``--data`` (given directly or by an old alias;
    argparse's ``required`` would not count the alias)."""
    args = parser.parse_args(argv)
    if getattr(args, "data", None) is None:
        parser.error("the following arguments are required: --data")
    return args


def models_to_score(args: argparse.Namespace) -> List[bool]:
    """``random_init`` flags of the models to score, in report order."""
    if args.random_init:
        return [True]
    return [False, True] if args.compare_random else [False]


def mean_spread(values: Sequence[float]) -> str:
    """``"71.3 ± 1.2 % (n=3)"``: mean and sample standard deviation of accuracies in [0, 1]."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * spread:.1f} % (n={len(values)})"
