"""Reading fairseq audio manifests (``.tsv``: root dir, then ``relative/path<TAB>num_samples``)."""
import logging
import os
from dataclasses import dataclass
from typing import List

logger = logging.getLogger(__name__)


class ManifestError(ValueError):
    """A manifest that cannot be used, with the file and line that says why."""


@dataclass(frozen=True)
class ManifestEntry:
    path: str          # absolute path of the audio file
    relative_path: str  # as written in the manifest
    num_samples: int
    line: int          # 1-based line in the manifest, for error messages


@dataclass(frozen=True)
class Manifest:
    path: str
    root: str
    entries: List[ManifestEntry]


def read_manifest(path: str, min_samples: int = 0) -> Manifest:
    """Parse a manifest; utterances shorter than ``min_samples`` are skipped with a warning
    and a count (the usual fairseq behaviour), everything malformed raises ManifestError."""
    if not os.path.isfile(path):
        raise ManifestError(f"manifest not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(f"{path}: empty manifest (the first line must be the audio root dir)")
    root = lines[0].strip()
    entries, skipped = [], 0
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[1].strip().isdigit():
            raise ManifestError(f"{path}:{number}: expected '<relative path><TAB><num samples>', got {line!r}")
        num_samples = int(fields[1])
        if num_samples < min_samples:
            skipped += 1
            continue
        entries.append(ManifestEntry(os.path.join(root, fields[0]), fields[0], num_samples, number))
    if skipped:
        logger.warning(f"{path}: skipped {skipped} of {skipped + len(entries)} utterances shorter "
                       f"than {min_samples} samples")
    if not entries:
        raise ManifestError(f"{path}: no usable utterances (lines: {len(lines) - 1}, "
                            f"shorter than {min_samples} samples: {skipped})")
    return Manifest(path=path, root=root, entries=entries)
