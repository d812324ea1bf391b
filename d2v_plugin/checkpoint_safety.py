"""Allow-list the few non-tensor types that old fairseq checkpoints pickle.

Why this exists
---------------
Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: the
unpickler only rebuilds tensors, primitive containers and globals that were
explicitly allow-listed.  ``fairseq.checkpoint_utils.load_checkpoint_to_cpu``
calls ``torch.load(f, map_location=cpu)`` with that default.

* Current fairseq checkpoints store ``cfg`` as plain containers
  (``OmegaConf.to_container``) and load without help.
* Older fairseq checkpoints (many published wav2vec 2.0 / data2vec 1.0 ones)
  pickle an ``argparse.Namespace`` under ``"args"`` and/or pickle ``cfg`` as a
  live omegaconf ``DictConfig`` object.  Those fail with
  ``Weights only load failed ... Unsupported global: GLOBAL <name>``.

The fix is NOT to turn ``weights_only`` off (that would let any checkpoint run
arbitrary code on load).  ``allow_fairseq_checkpoint_types()`` instead calls
``torch.serialization.add_safe_globals`` with exactly the types those
checkpoints need and nothing else; everything else (``os.system``, user
functions/classes, ``eval``, ...) is still refused by torch.

How the list was found
----------------------
Empirically (torch 2.13.0, omegaconf 2.3.1, fairseq 0.12.3 main, Python 3.11):
real checkpoints were written with ``torch.save`` and read back with
``fairseq.checkpoint_utils.load_checkpoint_to_cpu``; after each
``Unsupported global: GLOBAL X`` error, X (and only X) was added, until the
load succeeded.  Checkpoints used:

(a) ``{"args": argparse.Namespace(arch="wav2vec2", task="audio_pretraining",
    lr=[...], max_tokens=..., user_dir=None, ...), "model": {tensors},
    "optimizer_history": [...], "extra_state": {...}}`` with ``cfg`` absent
    or None  -> needs only ``argparse.Namespace``.
(b) ``cfg`` = ``OmegaConf.create({...nested dicts, lists, lists of lists, None,
    int, float, bool, str, an interpolation...})`` and ``cfg`` =
    ``fairseq.dataclass.utils.convert_namespace_to_omegaconf(args)`` (what old
    fairseq trainers stored) -> both need the same 10 types, in this order of
    error messages: DictConfig, ContainerMetadata, typing.Any, dict,
    collections.defaultdict, AnyNode, Metadata, ListConfig, list, int.
(c) ``cfg`` DictConfig (``allow_objects``) whose ``model.w2v_args`` is an
    ``argparse.Namespace`` (old fine-tuned wav2vec 2.0 layout) -> the omegaconf
    types above (minus the list ones) plus ``argparse.Namespace``.

The test suite (``tests/test_checkpoint_safety.py``) re-checks that each entry
is needed: dropping any single one makes at least one of those checkpoints
fail again.

The allow-list and why each entry is on it
------------------------------------------
``fairseq.data.dictionary.Dictionary``
    Every CTC fine-tuned checkpoint (fairseq's ``audio_finetuning`` task) pickles
    its target dictionary object under ``task_state``, current fairseq included.
    It has no ``__setstate__``/``__reduce__``: unpickling only fills its
    ``__dict__`` with lists, dicts, strings and ints.
``argparse.Namespace``
    The legacy ``state["args"]`` object (fairseq < 0.10 style training args),
    also found nested as ``cfg.model.w2v_args`` in old fine-tuned checkpoints.
    fairseq's ``_upgrade_state_dict`` converts it to ``state["cfg"]`` via
    ``convert_namespace_to_omegaconf``.  Unpickled by ``__new__`` plus a
    ``__dict__`` update; it has no ``__setstate__``/``__reduce__`` logic.
``omegaconf.DictConfig``
    A pickled ``cfg`` object (or any nested mapping inside it).
``omegaconf.ListConfig``
    Any list value inside a pickled ``DictConfig`` (e.g. ``optimization.lr``,
    ``update_freq``, ``criterion.log_keys``).
``omegaconf.base.ContainerMetadata``
    The ``_metadata`` dataclass of every DictConfig/ListConfig node.
``omegaconf.base.Metadata``
    The ``_metadata`` dataclass of every leaf value node (``AnyNode``).
``omegaconf.nodes.AnyNode``
    The node that wraps every leaf value (str/int/float/bool/None) in an
    untyped (non-structured) config, which is what fairseq stored.
``typing.Any``
    Stored as a *value* in metadata: ``ref_type``, ``key_type`` and
    ``element_type`` of untyped containers and nodes are ``typing.Any``.
    (Registered under the explicit name ``"typing.Any"`` so it also works on
    Pythons where ``typing.Any`` is not a class.)
``dict``
    Stored as a *value*: ``ContainerMetadata.object_type`` of a DictConfig is
    the class ``dict``; it is also the ``default_factory`` of
    ``Metadata.resolver_cache`` (``defaultdict(dict)``).
``list``
    Stored as a *value*: ``ContainerMetadata.object_type`` of a ListConfig.
``int``
    Stored as a *value*: ``ContainerMetadata.key_type`` of a ListConfig.
``collections.defaultdict``
    ``Metadata.resolver_cache`` is a ``defaultdict(dict)``.

The builtins ``dict``/``list``/``int`` and ``defaultdict`` are harmless to
allow-list: the weights-only unpickler can then only construct/call those
very types (with arguments that are themselves restricted), which executes no
user code.  ``DictConfig``/``ListConfig`` are rebuilt through omegaconf's own
``__setstate__``, which only stores the (already restricted) state.

Deliberately NOT on the list
----------------------------
* Anything from ``os``/``sys``/``posix``/``nt`` (torch blocks those modules
  outright anyway), ``builtins.eval``/``exec``/``getattr``, user functions and
  classes: a checkpoint that carries them must keep failing.
* Typed omegaconf nodes (``StringNode``, ``IntegerNode``, ``FloatNode``,
  ``BooleanNode``, ``EnumNode``), ``str``/``float``/``bool``/``typing.List`` and
  fairseq dataclass classes: they only appear when a *structured* config
  (``OmegaConf.structured(SomeFairseqDataclass)``) is pickled.  fairseq never
  saved those: ``convert_namespace_to_omegaconf`` and fairseq's hydra path
  build untyped configs, and the top-level ``FairseqConfig`` (and most
  sub-configs) cannot even be pickled because their ``ChoiceEnum`` enums are
  created dynamically.  A caller who truly has such a checkpoint can use
  ``torch.serialization.safe_globals([...])`` for that one load.

``torch.load``'s default and global behaviour are left untouched;
registration is process-global (that is how ``add_safe_globals`` works) and
idempotent.

This module imports nothing from the ``d2v_plugin`` package so that it can be
used (and tested) on its own.
"""

from __future__ import annotations

import argparse
import collections
import typing
from typing import List, Tuple, Union

import torch

__all__ = ["allow_fairseq_checkpoint_types", "fairseq_checkpoint_safe_globals"]

SafeGlobal = Union[type, Tuple[object, str]]


def fairseq_checkpoint_safe_globals() -> List[SafeGlobal]:
    """Return the exact entries registered by allow_fairseq_checkpoint_types."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode
    from fairseq.data.dictionary import Dictionary

    return [
        argparse.Namespace,
        DictConfig,
        ListConfig,
        ContainerMetadata,
        Metadata,
        AnyNode,
        (typing.Any, "typing.Any"),
        dict,
        list,
        int,
        collections.defaultdict,
        Dictionary,
    ]


def allow_fairseq_checkpoint_types() -> None:
    """Allow-list the types old fairseq checkpoints pickle (see module doc).

    Idempotent: entries already registered are not added again.  A no-op on
    torch versions without ``torch.serialization.add_safe_globals`` (< 2.4),
    where ``torch.load`` does not default to weights-only loading anyway.
    """
    serialization = torch.serialization
    add_safe_globals = getattr(serialization, "add_safe_globals", None)
    get_safe_globals = getattr(serialization, "get_safe_globals", None)
    if add_safe_globals is None or get_safe_globals is None:
        return
    already = set(get_safe_globals())
    missing = [g for g in fairseq_checkpoint_safe_globals() if g not in already]
    if missing:
        add_safe_globals(missing)
