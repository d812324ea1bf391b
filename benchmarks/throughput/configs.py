"""Config specs of the throughput benchmark: a yaml name (under config/pretraining or
benchmarks/configs, or a path) plus ``+key=value`` overrides, its label in the tables, its size
group, and per-size flag values (``tiny=20,base=3``)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent

CONFIG_DIRS = [REPO / "config" / "pretraining", BENCH / "configs"]


def per_config(spec: str, name: str, what: str) -> int:
    """``"20"`` -> 20 for every config; ``"tiny=20,base=3"`` -> the value of the longest
    key that prefixes ``name`` (``tiny_audio_d2v1=5`` beats ``tiny=20``)."""
    spec = str(spec).strip()
    if "=" not in spec:
        return int(spec)
    best = None
    for part in spec.split(","):
        key, _, value = part.partition("=")
        key = key.strip()
        if name.startswith(key) and (best is None or len(key) > len(best[0])):
            best = (key, int(value))
    if best is None:
        raise SystemExit(f"--{what} {spec!r} has no entry for config {name!r}")
    return best[1]


def split_spec(spec: str):
    """``"tiny_audio+model.clone_batch=1,model.depth=2"`` -> ("tiny_audio", [(key, value), ...])."""
    base, _, over = spec.partition("+")
    overrides = []
    for item in filter(None, (o.strip() for o in over.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"config override {item!r} in {spec!r} is not key=value")
        overrides.append((key.strip(), value.strip()))
    return base, overrides


def resolve_config(name: str) -> Path:
    name = split_spec(name)[0]
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path.resolve()
    for folder in CONFIG_DIRS:
        path = folder / f"{name}.yaml"
        if path.exists():
            return path
    raise SystemExit(f"no config {name!r} (looked in {', '.join(str(d) for d in CONFIG_DIRS)})")


def config_label(spec: str) -> str:
    """A config's name in the tables: the yaml's stem plus its overrides (``tiny_audio+model.clone_batch=1``)."""
    base, overrides = split_spec(spec)
    return Path(base).stem + "".join(f"+{k}={v}" if i == 0 else f",{k}={v}"
                                     for i, (k, v) in enumerate(overrides))


def size_of(spec: str) -> str:
    """The size group of a config: the part of its name before the first ``_`` (tiny, base)."""
    return config_label(spec).split("_")[0]


def load_yaml(spec: str):
    """The yaml of a config spec with its overrides applied (values parsed as YAML)."""
    import yaml as pyyaml
    from omegaconf import OmegaConf

    conf = OmegaConf.load(resolve_config(spec))
    for key, value in split_spec(spec)[1]:
        OmegaConf.update(conf, key, pyyaml.safe_load(value), merge=True)
    return conf


def family_of(model_name: str) -> str:
    return "w2v2" if model_name == "wav2vec2" else "d2v"


def groups_of(configs: List[str]) -> List[List[str]]:
    """Configs of one size run together (interleaved): every tiny_* config, then every base_* one."""
    groups: Dict[str, List[str]] = {}
    for c in configs:
        groups.setdefault(size_of(c), []).append(c)
    return list(groups.values())
