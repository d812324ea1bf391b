"""Shared plumbing of the reference-fixture tests (tests/test_reference_*_fixture.py).

Each of those tests compares our ``data2vec_multi`` with arrays recorded by the reference
data2vec 2.0 code in one fixture folder (``upstream_d2v2_audio``, ``_image``, ``_text``).
What is the same for all of them lives here: where the folder is (``tests/fixtures/<name>``
in the repository; ``$D2V_FIXTURES``, either a fixtures root or the folder itself, overrides
it), a collection error naming the missing files (a clone always has them, so a missing one is
a broken checkout, never a reason to skip), loading the recorded arrays and scalars, the
max-abs-diff comparison (printed, so ``pytest -s`` shows how close each array is), the
recorded state-dict layout and our state dict flattened the same way. The tests themselves
keep their tolerances and assertions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Collection, Dict, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES_ROOT = REPO / "tests" / "fixtures"   # the recorded reference outputs, part of the repository


def fixture_dir(name: str) -> Path:
    """``$D2V_FIXTURES/<name>`` or ``$D2V_FIXTURES`` itself if set, else ``tests/fixtures/<name>``."""
    env = os.environ.get("D2V_FIXTURES")
    if env:
        root = Path(env)
        return root / name if (root / name).is_dir() else root
    return FIXTURES_ROOT / name


def require_files(folder: Path, required: Sequence[str], what: str) -> None:
    """Raise (at collection) if ``folder`` lacks one of ``required``: the tests never skip."""
    missing = [f for f in required if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what} incomplete at {folder}: missing {', '.join(missing)} (tests/fixtures is part "
            f"of the repository; if D2V_FIXTURES is set, it must point to a complete copy)")


class ReferenceFixture:
    """One reference fixture folder: its arrays, scalars and state-dict layout.

    ``modality`` only names the fixture in the error about missing files; ``label`` is the
    prefix of the printed max abs diff; ``atol`` is the default tolerance of
    :meth:`assert_matches`.
    """

    def __init__(self, name: str, required: Sequence[str], modality: str, label: str,
                 atol: float):
        self.name = name
        self.dir = fixture_dir(name)
        self.label = label
        self.atol = atol
        require_files(self.dir, required, f"reference data2vec 2.0 {modality} fixture")

    def array(self, name: str) -> np.ndarray:
        return np.load(self.dir / f"{name}.npy")

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.array(name))

    def scalars(self) -> Dict:
        return json.loads((self.dir / "scalars.json").read_text())

    def max_diff(self, ours, name: str) -> float:
        """max |ours - recorded ``name``| after checking shape and dtype exactly."""
        expected = self.array(name)
        ours = ours.detach().cpu().numpy() if torch.is_tensor(ours) else np.asarray(ours)
        assert ours.shape == expected.shape, f"{name}: shape {ours.shape}, reference {expected.shape}"
        assert ours.dtype == expected.dtype, f"{name}: dtype {ours.dtype}, reference {expected.dtype}"
        return float(np.abs(ours.astype(np.float64) - expected.astype(np.float64)).max())

    def assert_matches(self, ours, name: str, atol: float = None) -> float:
        atol = self.atol if atol is None else atol
        diff = self.max_diff(ours, name)
        print(f"[{self.label}] {name}: max abs diff {diff:.3g}")
        assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol:g}"
        return diff

    def state_dict_layout(self) -> Dict[str, Dict[str, tuple]]:
        """state_dict_keys.txt -> {"pretraining": {key: (shape, dtype)}, "finetuning": {...}} (ordered)."""
        sections: Dict[str, Dict[str, tuple]] = {"pretraining": {}, "finetuning": {}}
        current = None
        for line in (self.dir / "state_dict_keys.txt").read_text().splitlines():
            if line.startswith("#"):
                current = "finetuning" if "remove_pretraining_modules" in line else "pretraining"
                continue
            if line.strip():
                key, shape, dtype = line.split("\t")
                sections[current][key] = (tuple(json.loads(shape)), dtype)
        return sections


def flat_layout(state: Dict, skip: Collection[str] = ()) -> Dict[str, tuple]:
    """A state dict as {key: (shape, dtype)}, the ``_ema`` dict flattened as ``_ema.<name>``;
    keys in ``skip`` are left out."""
    out = {}
    for key, value in state.items():
        if key in skip:
            continue
        items = [(f"{key}.{sub}", t) for sub, t in value.items()] if isinstance(value, dict) else [(key, value)]
        for k, t in items:
            out[k] = (tuple(t.shape), str(t.dtype).replace("torch.", ""))
    return out
