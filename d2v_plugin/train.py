"""``d2v-train``: ``fairseq-hydra-train`` with the configs shipped in this package.

Examples::

    d2v-train pretraining/tiny_audio task.data=data/speech_corpus
    d2v-train finetuning/base_100h task.data=manifests/ model.w2v_path=pretrained.pt
    d2v-train my_recipe.yaml task.data=...    # your own yaml: its folder is the config dir
    d2v-train --list                          # every shipped config

CONFIG is a shipped config (``pretraining/NAME`` or ``finetuning/NAME``; a bare NAME when it
exists in only one group) or a path to a ``.yaml``. Everything after CONFIG goes to
``fairseq-hydra-train`` unchanged: hydra overrides (``key=value``, ``+key=value``) and hydra
flags (``--cfg job``, ``-m``). What this adds to a plain ``fairseq-hydra-train`` call:

* ``--config-dir``/``--config-name`` from CONFIG, so it runs from any folder and any install
  (``d2v-config-dir`` prints the folder for a direct fairseq-hydra-train call);
* the plugin as ``common.user_dir``: ``$D2V_PLUGIN_DIR`` (read by every shipped config) is set
  to the installed package unless already set, and ``common.user_dir=<package>`` is added for a
  yaml that does not set ``common.user_dir`` (an override on the command line wins);
* fairseq's tqdm progress bar (``common.log_format=tqdm``) when stdout and stderr are a
  terminal and no ``common.log_format=`` override is given; otherwise the config's
  ``log_format`` (json in the base configs, which ``d2v-plot`` reads) is kept.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from . import console
from .resources import config_dir, list_configs, plugin_dir


def resolve_config(config: str) -> Tuple[Path, str]:
    """CONFIG -> (config dir, config name) for hydra; UserInputError naming the choices."""
    as_path = Path(config)
    if config.endswith((".yaml", ".yml")) or as_path.is_file():
        if not as_path.is_file():
            raise console.UserInputError(f"config file not found: {config}")
        return as_path.resolve().parent, as_path.stem
    root = config_dir()
    name = config[:-5] if config.endswith(".yaml") else config
    if "/" in name:
        group, stem = name.rsplit("/", 1)
        candidates = [(root / group, stem)] if (root / group / f"{stem}.yaml").is_file() else []
    else:
        candidates = [(root / g, name) for g in ("pretraining", "finetuning") if (root / g / f"{name}.yaml").is_file()]
    if len(candidates) == 1:
        return candidates[0]
    known = ", ".join(list_configs())
    if candidates:
        raise console.UserInputError(f"{config!r} is in both pretraining/ and finetuning/: say which ({known})")
    raise console.UserInputError(f"no config {config!r} in {root}; shipped configs: {known}")


def _yaml_sets_user_dir(config_path: Path) -> bool:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    return "user_dir" in (cfg.get("common") or {})


def _overrides_key(args: Sequence[str], key: str) -> bool:
    return any(a.lstrip("+~").startswith(f"{key}=") for a in args)


def hydra_argv(config: str, args: Sequence[str], interactive: bool) -> List[str]:
    """The ``fairseq-hydra-train`` argument list (without the program name) for CONFIG + args."""
    folder, name = resolve_config(config)
    argv = ["--config-dir", str(folder), "--config-name", name, *args]
    if not _overrides_key(args, "common.user_dir") and not _yaml_sets_user_dir(folder / f"{name}.yaml"):
        argv.append(f"common.user_dir={plugin_dir()}")
    if interactive and not _overrides_key(args, "common.log_format"):
        argv.append("common.log_format=tqdm")
    return argv


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="d2v-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="pretraining/NAME, finetuning/NAME, NAME or a .yaml path")
    p.add_argument("args", nargs=argparse.REMAINDER,
                   help="fairseq-hydra-train overrides and flags, passed on unchanged")
    p.add_argument("--list", action="store_true", help="list the shipped configs and exit")
    p.add_argument("--dry-run", action="store_true",
                   help="print the fairseq-hydra-train command instead of running it")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Optional[List[str]]:
    args = build_parser().parse_args(argv)
    if args.list:
        print(f"configs in {config_dir()}:")
        print("\n".join(f"  {name}" for name in list_configs()))
        return None
    if not args.config:
        raise console.UserInputError("CONFIG is required (d2v-train --list shows them)")
    os.environ.setdefault("D2V_PLUGIN_DIR", str(plugin_dir()))
    interactive = sys.stdout.isatty() and sys.stderr.isatty()
    cmd = hydra_argv(args.config, args.args, interactive)
    if args.dry_run:
        print(" ".join(["fairseq-hydra-train", *cmd]))
        return cmd
    from fairseq_cli.hydra_train import cli_main

    sys.argv = ["fairseq-hydra-train", *cmd]   # hydra reads its arguments from sys.argv
    cli_main()
    return cmd


def cli() -> int:
    return console.run(main, "d2v-train")


if __name__ == "__main__":
    sys.exit(cli())
