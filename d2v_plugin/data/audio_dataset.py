"""Raw-audio pretraining dataset: utterances cropped to the batch's shortest, plus the
student masks of the batch expander (``expander.py``), drawn after the crops from the same
generator seeded by (seed, epoch, sample ids)."""
import logging
import os
from typing import Dict, List, Optional

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from ..audio_frames import ConvSpec, feature_lengths, receptive_field
from .expander import BatchExpander
from .manifest import ManifestEntry, read_manifest
from .pretraining_dataset import PretrainingDataset

logger = logging.getLogger(__name__)


class AudioFileError(ValueError):
    """An audio file that cannot be used, naming the file and its manifest line."""


def load_audio(entry: ManifestEntry, manifest: str, sample_rate: int) -> np.ndarray:
    """Read one mono float32 waveform, or raise AudioFileError saying what is wrong."""
    where = f"{entry.path} ({manifest}:{entry.line})"
    if not os.path.exists(entry.path):  # libsndfile reports a missing file only as "System error"
        raise AudioFileError(f"{where}: file not found")
    try:
        wav, sr = sf.read(entry.path, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AudioFileError(f"{where}: file not found") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioFileError(f"{where}: not a readable audio file ({e})") from None
    if sr != sample_rate:
        raise AudioFileError(f"{where}: sample rate {sr} Hz, expected {sample_rate} Hz "
                             f"(resample, e.g. `sox in.wav -r {sample_rate} out.wav`)")
    if wav.shape[1] != 1:
        raise AudioFileError(f"{where}: {wav.shape[1]} channels, expected mono "
                             f"(e.g. `sox in.wav -c 1 out.wav`)")
    wav = wav[:, 0]
    if not np.isfinite(wav).all():
        raise AudioFileError(f"{where}: contains NaN or infinite samples")
    return wav


def load_padded_batch(entries: List[ManifestEntry], manifest: str, sample_rate: int, normalize: bool):
    """Whole utterances for inference (features, probes): loaded, layer-normed per utterance when
    the model was trained that way, right-padded into one batch. Returns ``(source (B, S),
    padding_mask (B, S) or None when nothing is padded, sizes)``."""
    wavs = [torch.from_numpy(load_audio(e, manifest, sample_rate)) for e in entries]
    if normalize:
        wavs = [F.layer_norm(w, w.shape) for w in wavs]
    sizes = [w.numel() for w in wavs]
    source = wavs[0].new_zeros(len(wavs), max(sizes))
    padding = torch.zeros(len(wavs), max(sizes), dtype=torch.bool)
    for b, w in enumerate(wavs):
        source[b, :w.numel()] = w
        padding[b, w.numel():] = True
    return source, (padding if padding.any() else None), sizes


class AudioPretrainingDataset(PretrainingDataset):
    def __init__(self, manifest_path: str, conv_spec: ConvSpec, sample_rate: int = 16000,
                 min_sample_size: int = 0, max_sample_size: Optional[int] = None,
                 normalize: bool = True, expander: Optional[BatchExpander] = None,
                 seed: int = 1, shuffle: bool = True):
        super().__init__(seed=seed, shuffle=shuffle, expander=expander)
        self.conv_spec = conv_spec
        min_samples = max(min_sample_size, receptive_field(conv_spec))
        self.manifest = read_manifest(manifest_path, min_samples=min_samples)
        self.entries = self.manifest.entries
        self.sample_rate = sample_rate
        self.max_sample_size = max_sample_size or max(e.num_samples for e in self.entries)
        self.normalize = normalize
        self.sizes = np.array([min(e.num_samples, self.max_sample_size) for e in self.entries], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Dict:
        entry = self.entries[index]
        wav = load_audio(entry, self.manifest.path, self.sample_rate)
        if len(wav) < receptive_field(self.conv_spec):
            raise AudioFileError(f"{entry.path} ({self.manifest.path}:{entry.line}): {len(wav)} samples, "
                                 f"shorter than the feature encoder's receptive field "
                                 f"({receptive_field(self.conv_spec)}); the manifest says {entry.num_samples}")
        source = torch.from_numpy(wav)
        if self.normalize:  # per utterance; the eps keeps all-zero audio at zero, not NaN
            source = F.layer_norm(source, source.shape)
        return {"id": index, "source": source}

    def collater(self, samples: List[Dict]) -> Dict:
        if not samples:
            return {}
        ids = [s["id"] for s in samples]
        # Crop every utterance to the batch's shortest (capped at max_sample_size): no
        # padding, so no masked padding frames and no padding in the target statistics.
        length = min(min(len(s["source"]) for s in samples), self.max_sample_size)
        gen = self.batch_generator(ids)  # the crops, then the masks
        sources = []
        for s in samples:
            excess = len(s["source"]) - length
            start = int(torch.randint(excess + 1, (1,), generator=gen)) if excess > 0 else 0
            sources.append(s["source"][start:start + length])
        batch = {"id": torch.LongTensor(ids), "net_input": {"source": torch.stack(sources)}}
        mask = self.student_masks(ids, int(feature_lengths(length, self.conv_spec)), gen)
        if mask is not None:
            batch["net_input"]["precomputed_mask"] = mask  # (B*M, frames)
        return batch
