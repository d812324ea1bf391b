"""Tests for d2v_plugin/checkpoint_safety.py.

Every load happens in a fresh ``python -c`` subprocess: the allow-list is
process-global (``torch.serialization.add_safe_globals``), so registering it in
the pytest process would leak into other tests and would make the "fails
before the allow-list" half of each test meaningless.

The module under test is imported by file path, so these tests do not depend
on ``d2v_plugin/__init__.py`` (or the models it imports) existing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MODULE_PATH = REPO / "d2v_plugin" / "checkpoint_safety.py"

_TORCH_VERSION = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2])
pytestmark = pytest.mark.skipif(
    _TORCH_VERSION < (2, 6),
    reason="torch.load only defaults to weights_only=True from torch 2.6",
)

WEIGHTS_ONLY_FAILED = "Weights only load failed"

# The exact allow-list, by the name the weights-only unpickler looks up.
EXPECTED_NAMES = {
    "argparse.Namespace",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "typing.Any",
    "builtins.dict",
    "builtins.list",
    "builtins.int",
    "collections.defaultdict",
    "fairseq.data.dictionary.Dictionary",
}

# Checkpoints that must load once the allow-list is registered.
GOOD = ["args.pt", "args_cfg_none.pt", "dictcfg.pt", "converted.pt", "w2v_args_ns.pt",
        "ctc_task_state.pt"]

# Checkpoints that must be refused even with the allow-list registered.
EVIL = [
    "evil_os_system.pt",
    "evil_user_function.pt",
    "evil_user_class.pt",
    "evil_reduce_exploit.pt",
    "evil_namespace_smuggle.pt",
    "evil_dictcfg_smuggle.pt",
    "evil_builtin_eval.pt",
]

# Preamble shared by all child processes.
CHILD_PREAMBLE = textwrap.dedent(
    f"""
    import argparse, importlib.util, json, os, pickle, sys
    import torch

    MODULE_PATH = {str(MODULE_PATH)!r}

    def load_safety():
        spec = importlib.util.spec_from_file_location(
            "d2v_checkpoint_safety_under_test", MODULE_PATH
        )
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    def emit(obj):
        print("RESULT:" + json.dumps(obj, default=repr), flush=True)

    def try_load(fn, *a, **kw):
        try:
            fn(*a, **kw)
            return None
        except pickle.UnpicklingError as e:
            return str(e)
    """
)

PAYLOAD_MODULE = textwrap.dedent(
    """
    # A module an attacker-controlled checkpoint could reference.
    def touch(path):
        with open(path, "w") as f:
            f.write("pwned")
        return 0

    class Plain:
        def __init__(self, x=1):
            self.x = x

    class Exploit:
        def __init__(self, marker):
            self.marker = marker

        def __reduce__(self):
            return (touch, (self.marker,))
    """
)

MAKER = textwrap.dedent(
    """
    import collections, os, sys
    from omegaconf import OmegaConf
    import evil_payload

    out = sys.argv[1]
    marker = sys.argv[2]

    def tensors():
        return collections.OrderedDict(
            [
                ("encoder.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
                ("encoder.bias", torch.full((3,), 0.5, dtype=torch.float16)),
                ("num_updates", torch.tensor(1000, dtype=torch.int64)),
            ]
        )

    def args():
        # Realistic legacy fairseq (wav2vec 2.0 pretraining) training args.
        return argparse.Namespace(
            arch="wav2vec2", task="audio_pretraining", criterion="wav2vec",
            data="/data/librispeech/manifest", user_dir=None, lr=[0.0005],
            max_tokens=1400000, max_sentences=None, update_freq=[1],
            optimizer="adam", adam_betas="(0.9,0.98)", adam_eps=1e-06,
            weight_decay=0.01, lr_scheduler="polynomial_decay",
            warmup_updates=32000, total_num_update=400000, max_update=400000,
            min_lr=1e-09, fp16=True, seed=1, distributed_world_size=64,
            log_keys=["prob_perplexity", "code_perplexity", "temp"],
            conv_feature_layers="[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
            final_dim=256, encoder_layers=12, dropout=0.1, layer_norm_first=False,
            sample_rate=16000, normalize=False, no_progress_bar=False,
            save_dir="checkpoints",
        )

    def state(**extra):
        d = {
            "model": tensors(),
            "optimizer_history": [
                {
                    "criterion_name": "Wav2vecCriterion",
                    "optimizer_name": "FairseqAdam",
                    "lr_scheduler_state": {"best": 2.5},
                    "num_updates": 1000,
                }
            ],
            "extra_state": {
                "epoch": 3,
                "val_loss": 2.5,
                "train_iterator": {"epoch": 3, "iterations_in_epoch": 10, "shuffle": True},
            },
            "last_optimizer_state": None,
        }
        d.update(extra)
        return d

    def save(obj, name):
        torch.save(obj, os.path.join(out, name))

    torch.save(tensors(), os.path.join(out, "ref_tensors.pt"))

    # (a) legacy args Namespace, cfg absent / cfg None
    save(state(args=args()), "args.pt")
    save(state(args=args(), cfg=None), "args_cfg_none.pt")

    # (b) cfg pickled as a live omegaconf DictConfig
    dictcfg = OmegaConf.create(
        {
            "common": {"fp16": True, "seed": 7, "user_dir": None, "log_interval": 200},
            "task": {"_name": "audio_pretraining", "data": "/data", "sample_rate": 16000,
                     "normalize": False, "labels": None},
            "model": {"_name": "data2vec_audio", "encoder_layers": 12, "dropout": 0.1,
                      "mask_prob": 0.65, "w2v_args": None},
            "optimization": {"lr": [0.0005], "update_freq": [1], "max_update": 400000},
            "criterion": {"_name": "model", "log_keys": ["ema_decay", "target_var"],
                          "loss_weights": [0.1, 10]},
            "empty_list": [],
            "nested_lists": [[1, 2], [None, "x"]],
            "tiny": 1.5e-09,
            "interp": "${common.seed}",
        }
    )
    save(state(args=None, cfg=dictcfg), "dictcfg.pt")

    # (b') cfg as fairseq's own convert_namespace_to_omegaconf builds it
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    save(state(args=None, cfg=convert_namespace_to_omegaconf(args())), "converted.pt")

    # old fine-tuned wav2vec 2.0 layout: Namespace nested inside the DictConfig
    ft = OmegaConf.create(
        {"model": {"_name": "wav2vec_ctc", "w2v_args": args()},
         "task": {"_name": "audio_finetuning"}},
        flags={"allow_objects": True},
    )
    save(state(args=None, cfg=ft), "w2v_args_ns.pt")

    # a current CTC fine-tuned checkpoint: audio_finetuning pickles its target Dictionary
    from fairseq.data.dictionary import Dictionary
    letters = Dictionary()
    for symbol in "|ETAO":
        letters.add_symbol(symbol)
    ctc = state(args=None, cfg={"model": {"_name": "wav2vec_ctc"}, "task": {"_name": "audio_finetuning"}})
    ctc["task_state"] = {"target_dictionary": letters}
    save(ctc, "ctc_task_state.pt")

    # (c) checkpoints that must stay refused
    save(state(args=args(), hook=os.system), "evil_os_system.pt")
    save(state(args=args(), hook=evil_payload.touch), "evil_user_function.pt")
    save(state(args=args(), obj=evil_payload.Plain(3)), "evil_user_class.pt")
    save(state(args=args(), obj=evil_payload.Exploit(marker)), "evil_reduce_exploit.pt")
    bad_args = args()
    bad_args.activation_fn = evil_payload.touch
    save(state(args=bad_args), "evil_namespace_smuggle.pt")
    bad_cfg = OmegaConf.create(
        {"model": {"_name": "x", "payload": evil_payload.Plain(5)}},
        flags={"allow_objects": True},
    )
    save(state(args=None, cfg=bad_cfg), "evil_dictcfg_smuggle.pt")
    save(state(args=args(), hook=eval), "evil_builtin_eval.pt")
    emit(sorted(os.listdir(out)))
    """
)


def _child_env(payload_dir: Path) -> dict:
    env = dict(os.environ)
    # Make sure nothing in the environment flips torch.load's default.
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(payload_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return env


def _run_child(code: str, *argv: str, payload_dir: Path, cwd: Path):
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_PREAMBLE + textwrap.dedent(code), *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=str(cwd),
        env=_child_env(payload_dir),
    )
    results = [
        json.loads(line[len("RESULT:"):])
        for line in proc.stdout.splitlines()
        if line.startswith("RESULT:")
    ]
    assert proc.returncode == 0 and results, (
        f"child failed (rc={proc.returncode})\n--- stdout ---\n{proc.stdout[-4000:]}"
        f"\n--- stderr ---\n{proc.stderr[-8000:]}"
    )
    return results[-1]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt_safety")
    payload_dir = root / "payload"
    payload_dir.mkdir()
    (payload_dir / "evil_payload.py").write_text(PAYLOAD_MODULE)
    out = root / "ckpts"
    out.mkdir()
    marker = root / "PWNED"
    files = _run_child(MAKER, str(out), str(marker), payload_dir=payload_dir, cwd=root)
    for name in GOOD + EVIL + ["ref_tensors.pt"]:
        assert name in files, files
    return {"dir": out, "payload_dir": payload_dir, "root": root, "marker": marker}


LOAD_GOOD = """
from fairseq import checkpoint_utils
from omegaconf import DictConfig, OmegaConf
path, ref_path = sys.argv[1], sys.argv[2]
out = {"before": try_load(checkpoint_utils.load_checkpoint_to_cpu, path)}
load_safety().allow_fairseq_checkpoint_types()
st = checkpoint_utils.load_checkpoint_to_cpu(path)
ref = torch.load(ref_path)
cfg = st["cfg"]
out["cfg_type"] = type(cfg).__name__
out["cfg_is_dictconfig"] = isinstance(cfg, DictConfig)
out["cfg"] = OmegaConf.to_container(cfg, resolve=False)
out["interp"] = cfg.get("interp", None)
out["args_type"] = type(st.get("args")).__name__
w2v = cfg.model.get("w2v_args", None) if "model" in cfg else None
out["w2v_args_type"] = type(w2v).__name__
out["w2v_args_arch"] = getattr(w2v, "arch", None)
out["tensors"] = {
    k: [torch.equal(st["model"][k], v), str(st["model"][k].dtype), str(v.dtype)]
    for k, v in ref.items()
}
out["model_keys"] = list(st["model"].keys())
out["optimizer_history"] = st["optimizer_history"]
out["extra_state"] = st["extra_state"]
emit(out)
"""


def _load_good(ckpts, name):
    d = ckpts["dir"]
    return _run_child(
        LOAD_GOOD, str(d / name), str(d / "ref_tensors.pt"),
        payload_dir=ckpts["payload_dir"], cwd=ckpts["root"],
    )


def _assert_common_payload(r):
    assert r["cfg_is_dictconfig"], r["cfg_type"]
    assert set(r["model_keys"]) == {"encoder.weight", "encoder.bias", "num_updates"}
    for key, (equal, dtype, ref_dtype) in r["tensors"].items():
        assert equal, key
        assert dtype == ref_dtype, key
    hist = r["optimizer_history"][-1]
    assert hist["optimizer_name"] == "FairseqAdam"
    assert hist["num_updates"] == 1000
    assert r["extra_state"]["train_iterator"]["epoch"] == 3


def _assert_refused_before(r, global_name):
    assert r["before"] is not None, "loaded without the allow-list?!"
    assert WEIGHTS_ONLY_FAILED in r["before"]
    assert f"GLOBAL {global_name}" in r["before"]


@pytest.mark.parametrize("name", ["args.pt", "args_cfg_none.pt"])
def test_args_namespace_checkpoint(ckpts, name):
    r = _load_good(ckpts, name)
    _assert_refused_before(r, "argparse.Namespace")
    _assert_common_payload(r)
    # fairseq's _upgrade_state_dict converted args -> cfg (and keeps args).
    assert r["args_type"] == "Namespace"
    cfg = r["cfg"]
    assert cfg["model"]["_name"] == "wav2vec2"
    assert cfg["task"]["_name"] == "audio_pretraining"
    assert cfg["task"]["data"] == "/data/librispeech/manifest"
    assert cfg["criterion"]["_name"] == "wav2vec"
    assert cfg["optimization"]["lr"] == [0.0005]
    assert cfg["optimization"]["max_update"] == 400000
    # legacy --min-lr is renamed to stop_min_lr by the upgrade
    assert cfg["optimization"]["stop_min_lr"] == pytest.approx(1e-09)
    assert cfg["dataset"]["max_tokens"] == 1400000
    assert cfg["common"]["user_dir"] is None
    assert cfg["common"]["fp16"] is True


def test_omegaconf_dictconfig_checkpoint(ckpts):
    r = _load_good(ckpts, "dictcfg.pt")
    _assert_refused_before(r, "omegaconf.dictconfig.DictConfig")
    _assert_common_payload(r)
    cfg = r["cfg"]
    assert cfg["common"] == {"fp16": True, "seed": 7, "user_dir": None, "log_interval": 200}
    assert cfg["task"]["labels"] is None
    assert cfg["model"]["_name"] == "data2vec_audio"
    assert cfg["model"]["dropout"] == 0.1
    assert cfg["optimization"]["lr"] == [0.0005]
    assert cfg["criterion"]["log_keys"] == ["ema_decay", "target_var"]
    assert cfg["criterion"]["loss_weights"] == [0.1, 10]
    assert cfg["empty_list"] == []
    assert cfg["nested_lists"] == [[1, 2], [None, "x"]]
    assert cfg["tiny"] == pytest.approx(1.5e-09)
    assert cfg["interp"] == "${common.seed}"
    assert r["interp"] == 7  # interpolation still resolves after unpickling


def test_converted_namespace_dictconfig_checkpoint(ckpts):
    # cfg built by fairseq.dataclass.utils.convert_namespace_to_omegaconf,
    # i.e. what older fairseq trainers pickled as state["cfg"].
    r = _load_good(ckpts, "converted.pt")
    _assert_refused_before(r, "omegaconf.dictconfig.DictConfig")
    _assert_common_payload(r)
    cfg = r["cfg"]
    assert cfg["model"]["_name"] == "wav2vec2"
    assert cfg["optimization"]["lr"] == [0.0005]
    assert cfg["dataset"]["max_tokens"] == 1400000


def test_finetuned_layout_namespace_inside_dictconfig(ckpts):
    r = _load_good(ckpts, "w2v_args_ns.pt")
    _assert_refused_before(r, "omegaconf.dictconfig.DictConfig")
    _assert_common_payload(r)
    assert r["cfg"]["model"]["_name"] == "wav2vec_ctc"
    assert r["w2v_args_type"] == "Namespace"
    assert r["w2v_args_arch"] == "wav2vec2"


LOAD_EVIL = """
from fairseq import checkpoint_utils
ckdir, marker, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
load_safety().allow_fairseq_checkpoint_types()
out = {}
for name in names:
    path = os.path.join(ckdir, name)
    out[name] = {
        "fairseq": try_load(checkpoint_utils.load_checkpoint_to_cpu, path),
        "torch_load": try_load(torch.load, path),
    }
out["marker_after_refusals"] = os.path.exists(marker)
# Sanity check that the exploit file is real: with weights_only=False (never
# do this in the plugin) it does run the payload.
torch.load(os.path.join(ckdir, "evil_reduce_exploit.pt"), weights_only=False)
out["marker_after_unsafe_load"] = os.path.exists(marker)
emit(out)
"""

EVIL_EXPECTED_GLOBAL = {
    # posix.system / nt.system: torch blocks the whole module
    "evil_os_system.pt": f"GLOBAL {os.system.__module__}.system ",
    "evil_user_function.pt": "GLOBAL evil_payload.touch ",
    "evil_user_class.pt": "GLOBAL evil_payload.Plain ",
    "evil_reduce_exploit.pt": "GLOBAL evil_payload.touch ",
    "evil_namespace_smuggle.pt": "GLOBAL evil_payload.touch ",
    "evil_dictcfg_smuggle.pt": "GLOBAL evil_payload.Plain ",
    "evil_builtin_eval.pt": "GLOBAL eval ",
}


def test_malicious_checkpoints_still_refused(ckpts):
    if ckpts["marker"].exists():
        ckpts["marker"].unlink()
    r = _run_child(
        LOAD_EVIL, str(ckpts["dir"]), str(ckpts["marker"]), ",".join(EVIL),
        payload_dir=ckpts["payload_dir"], cwd=ckpts["root"],
    )
    for name in EVIL:
        for how in ("fairseq", "torch_load"):
            msg = r[name][how]
            assert msg is not None, f"{name} loaded via {how} despite carrying a callable"
            assert WEIGHTS_ONLY_FAILED in msg, (name, how, msg)
            assert EVIL_EXPECTED_GLOBAL[name] in msg, (name, how, msg)
    assert r["marker_after_refusals"] is False
    assert r["marker_after_unsafe_load"] is True  # the exploit file is genuine


IDEMPOTENT = """
from fairseq import checkpoint_utils
safety = load_safety()
before = set(torch.serialization.get_safe_globals())
safety.allow_fairseq_checkpoint_types()
once = list(torch.serialization.get_safe_globals())
safety.allow_fairseq_checkpoint_types()
twice = list(torch.serialization.get_safe_globals())
added = set(once) - before

def name(g):
    return g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"

st = checkpoint_utils.load_checkpoint_to_cpu(sys.argv[1])
emit({
    "len_once": len(once), "len_twice": len(twice), "same": set(once) == set(twice),
    "added_names": sorted(name(g) for g in added),
    "removed": len(before - set(twice)),
    "loaded_cfg": type(st["cfg"]).__name__,
})
"""


def test_calling_twice_is_harmless(ckpts):
    r = _run_child(
        IDEMPOTENT, str(ckpts["dir"] / "dictcfg.pt"),
        payload_dir=ckpts["payload_dir"], cwd=ckpts["root"],
    )
    assert r["len_once"] == r["len_twice"]
    assert r["same"]
    assert r["removed"] == 0
    assert set(r["added_names"]) == EXPECTED_NAMES
    assert r["loaded_cfg"] == "DictConfig"


DEFAULTS = """
import inspect
load_fn, ser_load = torch.load, torch.serialization.load
sig_before = str(inspect.signature(torch.load))
load_safety().allow_fairseq_checkpoint_types()
ckdir = sys.argv[1]
emit({
    "same_load": torch.load is load_fn and torch.serialization.load is ser_load,
    "same_signature": str(inspect.signature(torch.load)) == sig_before,
    "weights_only_default": repr(inspect.signature(torch.load).parameters["weights_only"].default),
    "env": [k for k in os.environ if k.startswith("TORCH_FORCE")],
    "evil_plain": try_load(torch.load, os.path.join(ckdir, "evil_user_class.pt")),
    "evil_os_plain": try_load(torch.load, os.path.join(ckdir, "evil_os_system.pt")),
    "evil_explicit_true": try_load(
        torch.load, os.path.join(ckdir, "evil_user_function.pt"), weights_only=True
    ),
    "good_plain": try_load(torch.load, os.path.join(ckdir, "args.pt")),
})
"""


def test_torch_load_default_unchanged(ckpts):
    r = _run_child(
        DEFAULTS, str(ckpts["dir"]),
        payload_dir=ckpts["payload_dir"], cwd=ckpts["root"],
    )
    assert r["same_load"], "torch.load was replaced"
    assert r["same_signature"]
    assert r["weights_only_default"] == "None"  # torch resolves None -> True
    assert r["env"] == []
    for key in ("evil_plain", "evil_os_plain", "evil_explicit_true"):
        assert r[key] is not None and WEIGHTS_ONLY_FAILED in r[key], (key, r[key])
    assert r["good_plain"] is None  # the allow-list is all that changed


MINIMALITY = """
from fairseq import checkpoint_utils
ckdir, names = sys.argv[1], sys.argv[2].split(",")
entries = load_safety().fairseq_checkpoint_safe_globals()

def name(g):
    return g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"

def failures():
    return {
        n: try_load(checkpoint_utils.load_checkpoint_to_cpu, os.path.join(ckdir, n))
        for n in names
    }

out = {}
with torch.serialization.safe_globals(entries):
    out["all"] = failures()
for i, entry in enumerate(entries):
    with torch.serialization.safe_globals(entries[:i] + entries[i + 1:]):
        out[name(entry)] = {n: m for n, m in failures().items() if m is not None}
emit(out)
"""


def test_allow_list_is_minimal(ckpts):
    """Each entry is needed by at least one real checkpoint layout."""
    r = _run_child(
        MINIMALITY, str(ckpts["dir"]), ",".join(GOOD),
        payload_dir=ckpts["payload_dir"], cwd=ckpts["root"],
    )
    assert all(m is None for m in r["all"].values()), r["all"]
    dropped = set(r) - {"all"}
    assert dropped == EXPECTED_NAMES
    for entry in dropped:
        failed = r[entry]
        assert failed, f"{entry} is on the allow-list but no checkpoint needs it"
        short = entry[len("builtins."):] if entry.startswith("builtins.") else entry
        assert any(f"GLOBAL {short} " in m for m in failed.values()), (entry, failed)


def test_module_imports_nothing_from_package():
    src = MODULE_PATH.read_text()
    assert "d2v_plugin" not in re.sub(r'""".*?"""', "", src, flags=re.S)
    assert "weights_only=False" not in src
    before = list(torch.serialization.get_safe_globals())
    spec = importlib.util.spec_from_file_location("_cs_static", MODULE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    names_before = {repr(g) for g in before}
    assert {repr(g) for g in torch.serialization.get_safe_globals()} == names_before
    names = {
        g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}"
        for g in mod.fairseq_checkpoint_safe_globals()
    }
    assert names == EXPECTED_NAMES
    # building the list registers nothing either
    assert {repr(g) for g in torch.serialization.get_safe_globals()} == names_before
