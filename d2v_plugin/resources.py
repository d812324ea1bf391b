"""Where the plugin and its hydra configs are, wherever d2v_plugin is installed.

A wheel (``pip install .`` or from an index) carries the repository's ``config/`` tree as
``d2v_plugin/config/`` (setup.py copies it at build time); a clone or an editable install
uses ``config/`` at the repository root, next to the package. ``config_dir()`` returns
whichever exists, so ``--config-dir $(d2v-config-dir)/pretraining`` works in both cases.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

PLUGIN_DIR = Path(__file__).resolve().parent


def plugin_dir() -> Path:
    """The package folder: the value for fairseq's ``common.user_dir``."""
    return PLUGIN_DIR


def config_dir() -> Path:
    """The folder holding ``pretraining/`` and ``finetuning/`` (installed copy first)."""
    for candidate in (PLUGIN_DIR / "config", PLUGIN_DIR.parent / "config"):
        if (candidate / "pretraining").is_dir():
            return candidate
    raise FileNotFoundError(f"no hydra configs next to {PLUGIN_DIR} (looked for config/ inside the "
                            f"package and at {PLUGIN_DIR.parent}): a broken install; reinstall d2v_plugin")


def list_configs() -> List[str]:
    """``pretraining/tiny_audio``-style names of every shipped config (run_config presets excluded)."""
    root = config_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for group in ("pretraining", "finetuning")
                  for p in (root / group).glob("*.yaml"))


def config_dir_cli(argv: Optional[Sequence[str]] = None) -> int:
    """``d2v-config-dir``: print the config folder (for ``fairseq-hydra-train --config-dir``)."""
    import argparse

    p = argparse.ArgumentParser(prog="d2v-config-dir", description=config_dir_cli.__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--plugin", action="store_true", help="print the plugin folder (common.user_dir) instead")
    args = p.parse_args(argv)
    print(plugin_dir() if args.plugin else config_dir())
    return 0


if __name__ == "__main__":
    sys.exit(config_dir_cli())
