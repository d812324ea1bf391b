"""Transcribe audio with a fine-tuned CTC checkpoint, no references needed (``d2v-transcribe``).

Examples::

    d2v-transcribe checkpoints/ft/checkpoint_best.pt a.wav b.flac          # PATH<TAB>WORDS lines
    d2v-transcribe ckpt.pt --manifest manifests/dev_other.tsv --format json --output dev_other.json
    d2v-transcribe ckpt.pt a.wav --lm lm/lm.arpa --lexicon lm/lexicon.txt  # with the n-gram LM

Audio files are read with soundfile (wav, flac, ...; mono, or the channels averaged) and must
have the sample rate the model was fine-tuned at; ``--manifest`` takes a fairseq manifest
(``d2v-manifest``) instead. Decoding is exactly ``d2v-infer``'s (``decode.py``: greedy
Viterbi CTC, or ``--lm``/``--lexicon`` beam search; the same batching, so the same
hypotheses for the same batches; ``--batch-size 1`` decodes each file unpadded).

Output (``--output``, default stdout), in input order: ``text`` = one ``PATH<TAB>WORDS`` line
per utterance; ``json`` = ``{"checkpoint", "decoder", "utterances": [{"audio", "words",
"units"}]}`` (``units`` = letters separated by spaces, ``|`` after each word). An utterance
the dataset skips (shorter than the model's minimum) gets an empty transcript and a warning.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

from .. import console
from .decode import (HypothesisDecoder, add_decoding_arguments, beam_options_from, decode_manifest,
                     decoder_name, load_audio_split, load_ctc_model, manifest_path, manifest_size)

logger = logging.getLogger(__name__)


@dataclass
class Transcript:
    audio: str      # path as given (files) or root/relative path (manifest)
    words: str
    units: str


def _manifest_audio_paths(tsv: str) -> List[str]:
    with open(tsv, encoding="utf-8") as f:
        root, *rows = f.read().splitlines()
    return [os.path.join(root, row.split("\t")[0]) for row in rows if row.strip()]


def write_manifest(audio: Sequence[str], folder: str, split: str, sample_rate: int) -> str:
    """A fairseq manifest of ``audio`` (absolute paths under root ``/``); errors name the file."""
    from .prepare_manifest import num_samples
    import soundfile as sf

    rows = []
    for path in audio:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"audio file not found: {path}")
        frames = num_samples(path)
        rate = sf.info(path).samplerate
        if rate != sample_rate:
            raise console.UserInputError(f"{path}: sample rate {rate} Hz, the model needs {sample_rate} Hz "
                                         f"(resample it, e.g. sox in.wav -r {sample_rate} out.wav)")
        rows.append(f"{os.path.abspath(path).lstrip(os.sep)}\t{frames}")
    tsv = os.path.join(folder, f"{split}.tsv")
    with open(tsv, "w", encoding="utf-8", newline="\n") as f:
        f.write(os.sep + "\n")
        f.writelines(row + "\n" for row in rows)
    return tsv


def transcribe(checkpoint: str, audio: Sequence[str] = (), manifest: Optional[str] = None,
               max_tokens: Optional[int] = 1_000_000, batch_size: Optional[int] = None, cpu: bool = False,
               lm: Optional[str] = None, lexicon: Optional[str] = None, beam_options=None
               ) -> List[Transcript]:
    """Transcripts of ``audio`` files or of every line of ``manifest``, in input order."""
    if bool(audio) == bool(manifest):
        raise console.UserInputError("give AUDIO files or --manifest TSV (one of the two)")
    with tempfile.TemporaryDirectory(prefix="d2v-transcribe-") as tmp:
        if manifest:
            data, split = os.path.dirname(os.path.abspath(manifest)), os.path.basename(manifest)[:-len(".tsv")]
            if not manifest.endswith(".tsv"):
                raise console.UserInputError(f"{manifest}: a manifest is a .tsv file (d2v-manifest)")
            tsv = manifest_path(data, split)
            names = _manifest_audio_paths(tsv)
        else:
            data, split, names = tmp, "transcribe", list(audio)
        ctc = load_ctc_model(checkpoint, data, cpu)
        if not manifest:
            tsv = write_manifest(audio, tmp, split, int(ctc.cfg.task.get("sample_rate", 16000)))
        decoder = HypothesisDecoder(ctc.task, lm, lexicon, beam_options)
        load_audio_split(ctc, split, with_labels=False)
        n = manifest_size(tsv)
        logger.info("transcribing %d utterances (%s decoding)", n, decoder.name)
        units, words = decode_manifest(ctc, split, decoder, n, max_tokens, batch_size)
    return [Transcript(name, w or "", u or "") for name, w, u in zip(names, words, units)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="d2v-transcribe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="fine-tuned wav2vec_ctc checkpoint (e.g. checkpoint_best.pt)")
    p.add_argument("audio", nargs="*", help="audio files to transcribe")
    p.add_argument("--manifest", help="a fairseq manifest (.tsv) to transcribe instead of AUDIO files")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.add_argument("--output", help="write here instead of stdout")
    add_decoding_arguments(p)
    return p


def main(argv: Optional[Sequence[str]] = None) -> List[Transcript]:
    args = build_parser().parse_args(argv)
    transcripts = transcribe(args.checkpoint, args.audio, args.manifest, args.max_tokens, args.batch_size,
                             args.cpu, args.lm, args.lexicon, beam_options_from(args))
    if args.format == "json":
        text = json.dumps({"checkpoint": os.path.abspath(args.checkpoint), "decoder": decoder_name(args.lm),
                           "utterances": [vars(t) for t in transcripts]}, indent=1) + "\n"
    else:
        text = "".join(f"{t.audio}\t{t.words}\n" for t in transcripts)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{len(transcripts)} transcripts -> {args.output}")
    else:
        sys.stdout.write(text)
    return transcripts


def cli() -> int:
    from .lm_decoder import LMDecoderUnavailable

    return console.run(main, "d2v-transcribe", (console.UserInputError, FileNotFoundError, LMDecoderUnavailable))


if __name__ == "__main__":
    sys.exit(cli())
