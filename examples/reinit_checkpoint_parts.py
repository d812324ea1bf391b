"""Which part of a pretrained model carries what fine-tuning gains? Write a copy of a
data2vec_multi checkpoint whose parameters under the given name prefixes are replaced by those
of a freshly built model of the same config (what random-init fine-tuning starts from), the
rest kept; fine-tune the copy as any checkpoint (``asr_pretraining_benefit.py --pretrained``).

    python examples/reinit_checkpoint_parts.py pretrained.pt feature_encoder_only.pt \\
        --parts blocks. modality_encoders.AUDIO.relative_positional_encoder \\
                modality_encoders.AUDIO.context_encoder modality_encoders.AUDIO.alibi_scale

The teacher's EMA copy (``_ema``) is left as it is: fine-tuning does not read it.
"""
import argparse
import sys
from pathlib import Path
from typing import List, Sequence

import torch


def reinit_parts(src: Path, dst: Path, prefixes: Sequence[str], seed: int = 0) -> List[str]:
    """Write the copy; returns the replaced parameter names (an unknown prefix is an error)."""
    from fairseq import tasks
    from omegaconf import OmegaConf

    import d2v_plugin  # noqa: F401  (registers our task and model, as --user-dir does)

    state = torch.load(src, map_location="cpu", weights_only=False)
    cfg = OmegaConf.create(state["cfg"])
    torch.manual_seed(seed)
    fresh = tasks.setup_task(cfg.task).build_model(cfg.model).state_dict()
    weights = state["model"]
    replaced = []
    for prefix in prefixes:
        names = [k for k in weights if k.startswith(prefix) and not k.startswith("_ema")]
        if not names:
            raise SystemExit(f"{src}: no parameter starts with {prefix!r}")
        replaced += names
    for name in replaced:
        weights[name] = fresh[name].clone()
    torch.save(state, dst)
    return replaced


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("src", type=Path, help="data2vec_multi checkpoint")
    parser.add_argument("dst", type=Path, help="where the copy goes")
    parser.add_argument("--parts", nargs="+", required=True, help="parameter name prefixes to re-initialise")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fresh model")
    args = parser.parse_args(argv)
    names = reinit_parts(args.src, args.dst, args.parts, args.seed)
    groups = sorted({".".join(n.split(".")[:3]) for n in names})
    print(f"{args.dst}: re-initialised {len(names)} tensors ({', '.join(groups)})", file=sys.stderr)


if __name__ == "__main__":
    main()
