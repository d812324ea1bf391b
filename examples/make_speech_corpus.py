#!/usr/bin/env python3
"""Generate a small, deterministic English speech corpus with espeak-ng.

Why this exists: the data2vec 2.0 plugin needs real speech with transcripts
for pre-training smoke runs and CTC fine-tuning, and downloading LibriSpeech
is not an option in tests or offline machines. espeak-ng gives us
intelligible, reproducible speech from text we control, so the corpus can be
rebuilt bit-for-bit from a seed instead of being shipped.

Layout (fairseq wav2vec 2.0 conventions)::

    OUT_DIR/wav/{train,valid,test}/<split>_<NNNN>.wav   16 kHz mono 16-bit PCM
    OUT_DIR/{split}.tsv    first line: absolute root (OUT_DIR/wav), then
                           "<split>/<split>_<NNNN>.wav<TAB>num_samples"
    OUT_DIR/{split}.wrd    upper-case words, one utterance per line
    OUT_DIR/{split}.ltr    letters separated by spaces, "|" after every word
    OUT_DIR/{split}.phn    the phonemes espeak-ng spoke, separated by spaces
    OUT_DIR/{split}.spk    the espeak-ng voice (the "speaker") of each utterance
    OUT_DIR/dict.ltr.txt   "SYMBOL COUNT" lines (counts from train)
    OUT_DIR/dict.phn.txt   the same for phonemes
    OUT_DIR/corpus.json    stamp: version + parameters + summary

Phonemes are espeak-ng's own IPA output for the very call that synthesized the
audio (``--ipa --sep=_``, so each phoneme is one token exactly as espeak-ng
segments it, e.g. the diphthong ``aɪ`` or the r-coloured ``ɑːɹ``), with the
stress marks ``ˈ ˌ`` removed (stress is prosody, not a segment; phone
recognition benchmarks such as TIMIT/SUPERB PR score stress-less phones) and
length marks kept (``iː`` and ``ɪ`` are different phonemes). Word boundaries
are not written. They are the phonemes *of the voice*: en-us says ``ɹ``,
en-gb-scotland ``r``; the mnemonic form (``-x``) names the same phonemes with
ASCII codes but mixes in codes that are not segments (``;``, ``#``, digits).

Held-out voices (``--heldout-voices``): those voices speak only the extra
split ``test_unseen``; train/valid/test share the other voices (so speaker
identification is scored on speakers seen in training) and ``test_unseen``
scores phoneme recognition on unseen speakers. ``--unlabelled-hours H`` adds
``unlabelled.tsv`` (audio only, seen voices) for pretraining on more audio.

Usage::

    python examples/make_speech_corpus.py OUT_DIR [--num-train 360]
        [--num-valid 60] [--num-test 60] [--seed 1] [--workers N]
        [--heldout-voices 2 | --heldout-voices en-029,en+m3] [--num-test-unseen 60]
        [--unlabelled-hours 1.0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import soundfile as sf

logger = logging.getLogger(__name__)

# Bump whenever anything that changes the output (vocabulary, templates,
# voices, synthesis settings) changes, so stale corpora are rebuilt.
CORPUS_VERSION = 2  # 2: .phn/.spk/dict.phn.txt, held-out voices, unlabelled split

SAMPLE_RATE = 16_000
MIN_SECONDS = 1.0
MAX_SECONDS = 4.0
MIN_WORDS = 2
MAX_WORDS = 7
MAX_ATTEMPTS = 12
SPLITS = ("train", "valid", "test")  # always written, labelled
UNSEEN_SPLIT = "test_unseen"  # only with held-out voices
UNLABELLED_SPLIT = "unlabelled"  # only with --unlabelled-hours
STRESS_MARKS = "ˈˌ"
STAMP_NAME = "corpus.json"

# espeak-ng voices checked to produce *distinct* audio with espeak-ng 1.51.
# Note: "en-gb+<variant>" is silently ignored (identical to plain en-gb), so
# the British variants are spelled "en+<variant>" ("en" is British English).
# MBROLA voices (us-mbrola-*, en-uk) are absent: mbrola is not installed.
VOICES: tuple[str, ...] = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-029",
    "en-us-nyc",
    "en-us+f3",
    "en+f2",
    "en+m3",
    "en-us+m7",
    "en-gb-scotland+f3",
    "en-gb-x-rp+f4",
)
SPEEDS: tuple[int, ...] = (130, 145, 160, 175, 190)  # words per minute
PITCHES: tuple[int, ...] = (30, 40, 50, 60, 70)  # espeak-ng 0..99
SPEED_STEP = 15
SPEED_RANGE = (110, 230)

# --------------------------------------------------------------------------
# Fixed vocabulary. Kept in the script so the language never drifts.
# --------------------------------------------------------------------------

# "singular plural" pairs.
_NOUNS = """
dog dogs|cat cats|bird birds|fish fish|horse horses|cow cows|mouse mice
rabbit rabbits|duck ducks|sheep sheep|child children|man men|woman women
friend friends|teacher teachers|doctor doctors|farmer farmers|baby babies
boy boys|girl girls|king kings|queen queens|student students|house houses
car cars|boat boats|train trains|bus buses|bike bikes|road roads
bridge bridges|river rivers|tree trees|flower flowers|garden gardens
park parks|school schools|city cities|town towns|village villages
room rooms|door doors|window windows|table tables|chair chairs|bed beds
box boxes|book books|letter letters|pen pens|paper papers|cup cups
glass glasses|plate plates|bottle bottles|bag bags|hat hats|coat coats
shoe shoes|key keys|phone phones|clock clocks|lamp lamps|ball balls
toy toys|apple apples|orange oranges|egg eggs|cake cakes|song songs
game games|picture pictures|map maps|ship ships|star stars|cloud clouds
hill hills|field fields|lake lakes|stone stones|shop shops
kitchen kitchens|computer computers|basket baskets
zoo zoos|puzzle puzzles|jacket jackets
"""

# "base third-person-singular past" triples.
_INTRANSITIVE_VERBS = """
run runs ran|walk walks walked|sleep sleeps slept|sing sings sang
swim swims swam|jump jumps jumped|dance dances danced|laugh laughs laughed
smile smiles smiled|wait waits waited|work works worked|play plays played
sit sits sat|stand stands stood|rest rests rested|cry cries cried
fall falls fell|fly flies flew|move moves moved|shout shouts shouted
listen listens listened|stay stays stayed|win wins won|arrive arrives arrived
"""

_TRANSITIVE_VERBS = """
see sees saw|like likes liked|want wants wanted|need needs needed
find finds found|take takes took|bring brings brought|buy buys bought
sell sells sold|make makes made|build builds built|open opens opened
close closes closed|carry carries carried|hold holds held|paint paints painted
wash washes washed|clean cleans cleaned|draw draws drew|follow follows followed
watch watches watched|love loves loved|keep keeps kept|lose loses lost
catch catches caught|push pushes pushed|pull pulls pulled|help helps helped
visit visits visited|call calls called|cook cooks cooked|fix fixes fixed
hide hides hid|throw throws threw|count counts counted|read reads read
"""

ADJECTIVES = tuple(
    """
big small old young new red blue green yellow black white brown happy sad
quiet loud warm cold hot tall short long heavy light clean dirty empty full
fast slow soft hard bright dark kind brave busy funny strange lucky tired
hungry good bad pretty clever gentle angry early late round sweet fresh wet dry
lazy quick
""".split()
)
ADVERBS = tuple(
    """
quickly slowly quietly loudly happily early today again outside together
here there now often always later alone
""".split()
)
DEGREE_WORDS = ("very", "so", "too", "quite", "really")
PREPOSITIONS = ("on", "in", "under", "near", "behind", "beside", "by")
NAMES = tuple(
    """
anna tom lucy peter maria james emma david sarah john mary paul laura
mike nina sam
""".split()
)
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SUBJECT_PRONOUNS = ("i", "you", "we", "they", "he", "she")  # he/she are 3sg
SINGULAR_DETERMINERS = ("the", "a", "my", "this", "our", "your", "his", "her")
PLURAL_DETERMINERS = ("the", "my", "these", "some", "many", "our", "those")
NEGATIONS = ("don't", "can't", "won't")  # "doesn't" is used for he/she


def _parse_forms(table: str) -> tuple[tuple[str, ...], ...]:
    """Parse "a b|c d" tables; keeping them as text keeps the script short."""
    entries = (e.split() for line in table.split("\n") for e in line.split("|"))
    return tuple(dict.fromkeys(tuple(e) for e in entries if e))  # dedupe, ordered


NOUNS = _parse_forms(_NOUNS)
INTRANSITIVE_VERBS = _parse_forms(_INTRANSITIVE_VERBS)
TRANSITIVE_VERBS = _parse_forms(_TRANSITIVE_VERBS)


def vocabulary() -> frozenset[str]:
    """Every word a generated sentence may contain (lower-case)."""
    words: set[str] = set()
    for forms in NOUNS + INTRANSITIVE_VERBS + TRANSITIVE_VERBS:
        words.update(forms)
    words.update(ADJECTIVES + ADVERBS + DEGREE_WORDS + PREPOSITIONS + NAMES)
    words.update(NUMBERS + SUBJECT_PRONOUNS + SINGULAR_DETERMINERS)
    words.update(PLURAL_DETERMINERS + NEGATIONS)
    words.update(("an", "is", "are", "it's", "please", "doesn't", "there", "yesterday"))
    return frozenset(words)


# --------------------------------------------------------------------------
# Sentence templates: tiny grammar so the corpus has some linguistic structure
# (agreement, determiners, word order) rather than random word salad.
# --------------------------------------------------------------------------


def _article(det: str, next_word: str) -> str:
    """Turn "a" into "an" before a vowel letter (vocabulary avoids exceptions)."""
    return "an" if det == "a" and next_word[0] in "aeiou" else det


def _np_singular(rng: random.Random, adjective: bool = False) -> list[str]:
    """Singular noun phrase: determiner [adjective] noun."""
    words = [rng.choice(ADJECTIVES)] if adjective else []
    words.append(rng.choice(NOUNS)[0])
    return [_article(rng.choice(SINGULAR_DETERMINERS), words[0])] + words


def _np_plural(rng: random.Random, adjective: bool = False) -> list[str]:
    """Plural noun phrase: determiner [adjective] noun."""
    words = [rng.choice(ADJECTIVES)] if adjective else []
    return [rng.choice(PLURAL_DETERMINERS)] + words + [rng.choice(NOUNS)[1]]


def _pronoun_and_form(rng: random.Random) -> tuple[str, int]:
    """Subject pronoun plus the verb-form index it needs (0 base, 1 3sg)."""
    pronoun = rng.choice(SUBJECT_PRONOUNS)
    return pronoun, 1 if pronoun in ("he", "she") else 0


def _t_pronoun_verb(rng: random.Random) -> list[str]:
    pronoun, form = _pronoun_and_form(rng)
    return [pronoun, rng.choice(INTRANSITIVE_VERBS)[form]]


def _t_plural_verb(rng: random.Random) -> list[str]:
    return [rng.choice(NOUNS)[1], rng.choice(INTRANSITIVE_VERBS)[0]]


def _t_name_verb_adverb(rng: random.Random) -> list[str]:
    return [rng.choice(NAMES), rng.choice(INTRANSITIVE_VERBS)[1], rng.choice(ADVERBS)]


def _t_its_adjective(rng: random.Random) -> list[str]:
    return ["it's", rng.choice(DEGREE_WORDS), rng.choice(ADJECTIVES)]


def _t_noun_verb(rng: random.Random) -> list[str]:
    return _np_singular(rng) + [rng.choice(INTRANSITIVE_VERBS)[1]]


def _t_pronoun_verb_object(rng: random.Random) -> list[str]:
    pronoun, form = _pronoun_and_form(rng)
    return [pronoun, rng.choice(TRANSITIVE_VERBS)[form]] + _np_singular(rng)


def _t_negation(rng: random.Random) -> list[str]:
    pronoun, form = _pronoun_and_form(rng)
    negation = "doesn't" if form == 1 and rng.random() < 0.5 else rng.choice(NEGATIONS)
    return [pronoun, negation, rng.choice(TRANSITIVE_VERBS)[0], rng.choice(NOUNS)[1]]


def _t_noun_is_adjective(rng: random.Random) -> list[str]:
    if rng.random() < 0.5:
        return _np_singular(rng) + ["is", rng.choice(ADJECTIVES)]
    return _np_plural(rng) + ["are", rng.choice(ADJECTIVES)]


def _t_please(rng: random.Random) -> list[str]:
    return ["please", rng.choice(TRANSITIVE_VERBS)[0]] + _np_singular(rng)


def _t_number_noun_verb_adverb(rng: random.Random) -> list[str]:
    return [
        rng.choice(NUMBERS),
        rng.choice(NOUNS)[1],
        rng.choice(INTRANSITIVE_VERBS)[0],
        rng.choice(ADVERBS),
    ]


def _t_adjective_noun_verb_adverb(rng: random.Random) -> list[str]:
    return _np_singular(rng, adjective=True) + [
        rng.choice(INTRANSITIVE_VERBS)[1],
        rng.choice(ADVERBS),
    ]


def _t_name_past_yesterday(rng: random.Random) -> list[str]:
    return [rng.choice(NAMES), rng.choice(TRANSITIVE_VERBS)[2]] + _np_singular(rng) + [
        "yesterday"
    ]


def _t_noun_verb_place(rng: random.Random) -> list[str]:
    return (
        _np_singular(rng)
        + [rng.choice(INTRANSITIVE_VERBS)[1], rng.choice(PREPOSITIONS)]
        + _np_singular(rng)
    )


def _t_noun_verb_adjective_object(rng: random.Random) -> list[str]:
    return (
        _np_singular(rng)
        + [rng.choice(TRANSITIVE_VERBS)[1]]
        + _np_singular(rng, adjective=True)
    )


def _t_there_are(rng: random.Random) -> list[str]:
    return (
        ["there", "are", rng.choice(NUMBERS), rng.choice(NOUNS)[1], rng.choice(PREPOSITIONS)]
        + _np_singular(rng)
    )


def _t_name_past_object_place(rng: random.Random) -> list[str]:
    return (
        [rng.choice(NAMES), rng.choice(TRANSITIVE_VERBS)[2]]
        + _np_singular(rng)
        + [rng.choice(PREPOSITIONS)]
        + _np_singular(rng)
    )


# (word count, template). Every template always yields exactly that many words.
TEMPLATES: tuple[tuple[int, Callable[[random.Random], list[str]]], ...] = (
    (2, _t_pronoun_verb),
    (2, _t_plural_verb),
    (3, _t_name_verb_adverb),
    (3, _t_its_adjective),
    (3, _t_noun_verb),
    (4, _t_pronoun_verb_object),
    (4, _t_negation),
    (4, _t_noun_is_adjective),
    (4, _t_please),
    (4, _t_number_noun_verb_adverb),
    (5, _t_adjective_noun_verb_adverb),
    (5, _t_name_past_yesterday),
    (6, _t_noun_verb_place),
    (6, _t_noun_verb_adjective_object),
    (7, _t_there_are),
    (7, _t_name_past_object_place),
)


def make_sentence(rng: random.Random, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Draw a lower-case sentence with a word count in [min_words, max_words].

    If no template fits the range (the duration retry loop can narrow it to
    nothing), the templates whose length is closest to the range are used, so
    the caller can still make progress by changing the speaking rate.
    """
    fitting = [t for n, t in TEMPLATES if min_words <= n <= max_words]
    if not fitting:
        def distance(n: int) -> int:
            return max(min_words - n, n - max_words, 0)

        best = min(distance(n) for n, _ in TEMPLATES)
        fitting = [t for n, t in TEMPLATES if distance(n) == best]
    return rng.choice(fitting)(rng)


def words_to_wrd(words: Sequence[str]) -> str:
    """One .wrd line: upper-case words separated by single spaces."""
    return " ".join(w.upper() for w in words)


def ipa_to_phonemes(ipa: str) -> list[str]:
    """espeak-ng ``--ipa --sep=_`` output -> phoneme tokens without stress marks.

    "ð_ə d_ˈɑː_ɡ" -> ["ð", "ə", "d", "ɑː", "ɡ"]; words (spaces) and clauses (newlines)
    are flattened, empty tokens (a lone stress mark) dropped.
    """
    tokens = (t.strip(STRESS_MARKS) for t in re.split(r"[\s_]+", ipa))
    return [t for t in tokens if t]


def wrd_to_ltr(wrd_line: str) -> str:
    """Letter transcript: "HELLO WORLD" -> "H E L L O | W O R L D |"."""
    return " ".join(c for word in wrd_line.split() for c in [*word, "|"])


# --------------------------------------------------------------------------
# Synthesis (runs in worker processes).
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """Everything a worker needs; the utterance RNG derives from these only."""

    seed: int
    split: str
    index: int
    voice: str
    wav_path: str


@dataclass(frozen=True)
class Utterance:
    """A synthesized utterance, as reported back to the parent process."""

    split: str
    index: int
    words: tuple[str, ...]
    num_samples: int
    voice: str
    speed: int
    pitch: int
    attempts: int
    phonemes: tuple[str, ...] = ()


def _run(cmd: Sequence[str]) -> None:
    """Run a tool, surfacing its stderr on failure (espeak/sox errors are terse)."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")


def _run_stdout(cmd: Sequence[str]) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def synthesize(text: str, voice: str, speed: int, pitch: int, wav_path: Path) -> int:
    """Speak `text` into a 16 kHz mono 16-bit WAV and return its sample count."""
    return synthesize_with_phonemes(text, voice, speed, pitch, wav_path)[0]


def synthesize_with_phonemes(text: str, voice: str, speed: int, pitch: int,
                             wav_path: Path) -> tuple[int, list[str]]:
    """Speak `text` into a 16 kHz mono 16-bit WAV: (sample count, phonemes spoken).

    The phonemes come from the same espeak-ng call (``--ipa`` prints what it speaks;
    the audio is byte-identical to a call without it).

    sox runs with -R (repeatable): without it sox seeds its dither noise
    randomly, and the resampled audio differs from run to run.
    """
    wav_path = Path(wav_path)
    with tempfile.TemporaryDirectory(prefix="espeak_") as tmp:
        raw = Path(tmp) / "raw.wav"
        ipa = _run_stdout(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                           "--ipa", "--sep=_", "-w", str(raw), text])
        _run(["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(wav_path)])
    info = sf.info(str(wav_path))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise RuntimeError(f"sox produced {info.samplerate} Hz x{info.channels}: {wav_path}")
    phonemes = ipa_to_phonemes(ipa)
    if not phonemes:
        raise RuntimeError(f"espeak-ng printed no phonemes for {text!r} ({voice})")
    return int(info.frames), phonemes


def synthesize_utterance(job: Job) -> Utterance:
    """Make one utterance of 1-4 s, regenerating (never truncating) if needed.

    Too long: next try uses fewer words and a faster rate; too short: more
    words and a slower rate. The RNG is seeded from (seed, split, index) only,
    so the result does not depend on worker count or scheduling.
    """
    rng = random.Random(f"{job.seed}:{job.split}:{job.index}")
    speed = rng.choice(SPEEDS)
    pitch = rng.choice(PITCHES)
    lo, hi = MIN_WORDS, MAX_WORDS
    final = Path(job.wav_path)
    tmp = final.with_name(final.stem + ".partial.wav")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        words = make_sentence(rng, lo, hi)
        num_samples, phonemes = synthesize_with_phonemes(" ".join(words), job.voice, speed, pitch, tmp)
        seconds = num_samples / SAMPLE_RATE
        if MIN_SECONDS <= seconds <= MAX_SECONDS:
            os.replace(tmp, final)
            return Utterance(
                job.split, job.index, tuple(words), num_samples, job.voice, speed, pitch, attempt,
                tuple(phonemes),
            )
        logger.debug("%s: %.2f s for %d words at %d wpm, retrying", final.name, seconds, len(words), speed)
        if seconds > MAX_SECONDS:
            hi = max(MIN_WORDS, len(words) - 1)
            speed = min(speed + SPEED_STEP, SPEED_RANGE[1])
        else:
            lo = min(MAX_WORDS, len(words) + 1)
            speed = max(speed - SPEED_STEP, SPEED_RANGE[0])
        lo = min(lo, hi)
    tmp.unlink(missing_ok=True)
    raise RuntimeError(f"could not fit {final.name} into {MIN_SECONDS}-{MAX_SECONDS} s")


# --------------------------------------------------------------------------
# Corpus assembly (parent process).
# --------------------------------------------------------------------------


def _voice_order(seed: int, split: str, voices: Sequence[str] = VOICES) -> list[str]:
    """Seeded voice rotation: balanced voices per split, even for tiny splits."""
    voices = list(voices)
    random.Random(f"{seed}:{split}:voices").shuffle(voices)
    return voices


def resolve_heldout_voices(spec: int | str | Sequence[str] | None, seed: int) -> tuple[str, ...]:
    """The held-out voices: a count (drawn with the seed) or explicit names, in VOICES order.

    At least two voices must stay for train/valid/test (speaker identification needs
    several speakers) and at least one must be held out when asked for.
    """
    if spec is None or spec == 0 or spec == "" or spec == "0":
        return ()
    if isinstance(spec, str):
        spec = int(spec) if spec.strip().isdigit() else [v for v in spec.split(",") if v.strip()]
    if isinstance(spec, int):
        if not 0 < spec <= len(VOICES) - 2:
            raise ValueError(f"--heldout-voices {spec}: choose 1..{len(VOICES) - 2} of the {len(VOICES)} voices")
        chosen = set(random.Random(f"{seed}:heldout").sample(list(VOICES), spec))
    else:
        chosen = {v.strip() for v in spec}
        unknown = sorted(chosen - set(VOICES))
        if unknown:
            raise ValueError(f"--heldout-voices: unknown voice(s) {unknown}; known: {', '.join(VOICES)}")
        if len(chosen) > len(VOICES) - 2:
            raise ValueError(f"--heldout-voices: at most {len(VOICES) - 2} voices can be held out")
    return tuple(v for v in VOICES if v in chosen)


def _wav_name(split: str, index: int) -> str:
    return f"{split}_{index:04d}.wav"


def _make_jobs(out_dir: Path, split: str, indices: Iterable[int], seed: int,
               voices: Sequence[str] = VOICES) -> list[Job]:
    order = _voice_order(seed, split, voices)
    wav_dir = out_dir / "wav" / split
    return [Job(seed, split, i, order[i % len(order)], str(wav_dir / _wav_name(split, i))) for i in indices]


def _clear_split_audio(out_dir: Path, split: str) -> None:
    """Delete audio this script wrote earlier, so no stale files survive a resize."""
    wav_dir = out_dir / "wav" / split
    wav_dir.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"{re.escape(split)}_\d{{4,}}(\.partial)?\.wav")
    for path in wav_dir.iterdir():
        if pattern.fullmatch(path.name):
            path.unlink()


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write "\n"-terminated lines; explicit newline keeps bytes platform-independent."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def _write_manifest(out_dir: Path, split: str, utterances: Sequence[Utterance]) -> None:
    root = (out_dir / "wav").resolve()
    tsv = [str(root)]
    for utt in utterances:
        rel = f"{split}/{_wav_name(split, utt.index)}"
        frames = sf.info(str(root / rel)).frames  # read back, don't trust the worker
        tsv.append(f"{rel}\t{frames}")
    _write_lines(out_dir / f"{split}.tsv", tsv)


def _write_split_labels(out_dir: Path, split: str, utterances: Sequence[Utterance]) -> dict[str, list[str]]:
    """Write {split}.tsv/.wrd/.ltr/.phn/.spk; return the ltr and phn lines for the dictionaries."""
    _write_manifest(out_dir, split, utterances)
    wrd = [words_to_wrd(utt.words) for utt in utterances]
    labels = {"ltr": [wrd_to_ltr(line) for line in wrd], "phn": [" ".join(u.phonemes) for u in utterances]}
    _write_lines(out_dir / f"{split}.wrd", wrd)
    _write_lines(out_dir / f"{split}.ltr", labels["ltr"])
    _write_lines(out_dir / f"{split}.phn", labels["phn"])
    _write_lines(out_dir / f"{split}.spk", (u.voice for u in utterances))
    return labels


def _write_dictionary(out_dir: Path, lines_by_split: dict[str, list[str]], name: str = "dict.ltr.txt") -> None:
    """dict.*.txt: train counts, plus 0-count entries for symbols only in other splits.

    fairseq maps unseen symbols to <unk>, so every symbol of every split must
    be listed even when train happens not to contain it.
    """
    counts = Counter(tok for line in lines_by_split["train"] for tok in line.split())
    for lines in lines_by_split.values():
        for tok in sorted({t for line in lines for t in line.split()}):
            counts.setdefault(tok, 0)
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    _write_lines(out_dir / name, (f"{sym} {n}" for sym, n in ordered))


def _split_summary(utterances: Sequence[Utterance]) -> dict:
    return {
        "count": len(utterances),
        "seconds": round(sum(u.num_samples for u in utterances) / SAMPLE_RATE, 3),
        "voices": dict(sorted(Counter(u.voice for u in utterances).items())),
    }


def _load_complete_stamp(out_dir: Path, params: dict) -> dict | None:
    """Return the stored summary if OUT_DIR holds a finished corpus for `params`."""
    stamp = out_dir / STAMP_NAME
    try:
        data = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("version") != CORPUS_VERSION or data.get("params") != params:
        return None
    if not all((out_dir / d).is_file() for d in ("dict.ltr.txt", "dict.phn.txt")):
        return None
    for split, info in data.get("splits", {}).items():
        exts = ("tsv",) if split == UNLABELLED_SPLIT else ("tsv", "wrd", "ltr", "phn", "spk")
        files = [out_dir / f"{split}.{ext}" for ext in exts]
        if not all(f.is_file() for f in files):
            return None
        lines = files[0].read_text(encoding="utf-8").splitlines()
        if len(lines) != info["count"] + 1:
            return None
        root = Path(lines[0])
        if not all((root / line.split("\t")[0]).is_file() for line in lines[1:]):
            return None
    return data


class _Synthesizer:
    """Runs jobs in order (1 worker) or on a process pool, logging progress every few seconds."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown()

    def run(self, jobs: Sequence[Job], what: str) -> list[Utterance]:
        start = last = time.perf_counter()
        if self.pool is None:
            results_iter = map(synthesize_utterance, jobs)
        else:
            results_iter = self.pool.map(synthesize_utterance, jobs, chunksize=4)
        results, seconds = [], 0.0
        for utt in results_iter:
            results.append(utt)
            seconds += utt.num_samples / SAMPLE_RATE
            now = time.perf_counter()
            if now - last >= 5.0 or len(results) == len(jobs):
                logger.info("%s: %d/%d utterances, %.1f min of audio, %.0f s", what, len(results), len(jobs),
                            seconds / 60, now - start)
                last = now
        return results


def _synthesize_hours(synth: _Synthesizer, out_dir: Path, split: str, hours: float, seed: int,
                      voices: Sequence[str]) -> list[Utterance]:
    """The shortest prefix of utterances 0, 1, 2, ... of `split` that holds `hours` of audio.

    Each utterance depends only on (seed, split, index), and the prefix is the shortest one
    reaching the target, so the result does not depend on how the indices were batched.
    """
    target = hours * 3600.0
    results: list[Utterance] = []
    total = 0.0
    while total < target:
        mean = total / len(results) if results else 1.8  # seconds per utterance, measured
        guess = max(8, int((target - total) / mean * 1.1) + 1)  # overshoot a little: one pass
        jobs = _make_jobs(out_dir, split, range(len(results), len(results) + guess), seed, voices)
        results += synth.run(jobs, f"{split} ({hours:g} h)")
        total = sum(u.num_samples for u in results) / SAMPLE_RATE
    keep, seconds = 0, 0.0
    while seconds < target:
        seconds += results[keep].num_samples / SAMPLE_RATE
        keep += 1
    for extra in results[keep:]:
        Path(out_dir / "wav" / split / _wav_name(split, extra.index)).unlink()
    return results[:keep]


def make_corpus(
    out_dir: str | os.PathLike,
    num_train: int = 360,
    num_valid: int = 60,
    num_test: int = 60,
    seed: int = 1,
    workers: int | None = None,
    heldout_voices: int | str | Sequence[str] | None = None,
    num_test_unseen: int = 60,
    unlabelled_hours: float = 0.0,
) -> dict:
    """Build (or reuse) the corpus in `out_dir` and return its summary.

    The summary holds per-split counts, total seconds and voice counts, plus
    "cached" (True when an existing stamp matched) and "elapsed_seconds".
    `workers` only affects speed, never the output, so it is not stamped.
    `heldout_voices` (a count or voice names) speak only the `test_unseen` split
    (`num_test_unseen` utterances); `unlabelled_hours` > 0 adds `unlabelled.tsv`.
    """
    out_dir = Path(out_dir)
    heldout = resolve_heldout_voices(heldout_voices, seed)
    params = {"num_train": num_train, "num_valid": num_valid, "num_test": num_test, "seed": seed}
    if heldout:  # absent otherwise: corpora without held-out voices keep their version-1 params
        params.update(heldout_voices=list(heldout), num_test_unseen=num_test_unseen)
    if unlabelled_hours:
        params["unlabelled_hours"] = unlabelled_hours
    if min(num_train, num_valid, num_test, num_test_unseen) < 0 or unlabelled_hours < 0:
        raise ValueError(f"split sizes must be >= 0: {params}")
    start = time.perf_counter()
    stamped = _load_complete_stamp(out_dir, params)
    if stamped is not None:
        logger.info("%s already holds this corpus (stamp %s); skipping", out_dir, STAMP_NAME)
        return {**stamped, "cached": True, "elapsed_seconds": time.perf_counter() - start}

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STAMP_NAME).unlink(missing_ok=True)  # incomplete until rewritten
    seen = [v for v in VOICES if v not in heldout]
    plan = {split: (params[f"num_{split}"], seen) for split in SPLITS}
    if heldout:
        plan[UNSEEN_SPLIT] = (num_test_unseen, heldout)
    for split in (*SPLITS, UNSEEN_SPLIT, UNLABELLED_SPLIT):
        _clear_split_audio(out_dir, split)
        if split not in plan and split != UNLABELLED_SPLIT or split == UNLABELLED_SPLIT and not unlabelled_hours:
            for ext in ("tsv", "wrd", "ltr", "phn", "spk"):  # a stale optional split must not survive
                (out_dir / f"{split}.{ext}").unlink(missing_ok=True)
    jobs: list[Job] = []
    for split, (count, voices) in plan.items():
        jobs += _make_jobs(out_dir, split, range(count), seed, voices)

    workers = max(1, workers or os.cpu_count() or 1)
    logger.info("synthesizing %d labelled utterances with %d worker(s)", len(jobs), workers)
    with _Synthesizer(workers) as synth:
        results = synth.run(jobs, "labelled splits")
        unlabelled = (_synthesize_hours(synth, out_dir, UNLABELLED_SPLIT, unlabelled_hours, seed, seen)
                      if unlabelled_hours else [])

    labels_by_split: dict[str, dict[str, list[str]]] = {}
    summary: dict = {"version": CORPUS_VERSION, "params": params, "splits": {}}
    for split in plan:
        utts = [u for u in results if u.split == split]
        labels_by_split[split] = _write_split_labels(out_dir, split, utts)
        summary["splits"][split] = _split_summary(utts)
    for kind in ("ltr", "phn"):
        _write_dictionary(out_dir, {s: labels[kind] for s, labels in labels_by_split.items()}, f"dict.{kind}.txt")
    if unlabelled_hours:
        _write_manifest(out_dir, UNLABELLED_SPLIT, unlabelled)
        summary["splits"][UNLABELLED_SPLIT] = _split_summary(unlabelled)
    summary["voices"] = sorted({u.voice for u in results})
    summary["heldout_voices"] = list(heldout)
    summary["retried"] = sum(u.attempts > 1 for u in results + unlabelled)

    stamp_tmp = out_dir / (STAMP_NAME + ".tmp")
    stamp_tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(stamp_tmp, out_dir / STAMP_NAME)  # written last: marks completeness
    elapsed = time.perf_counter() - start
    logger.info("wrote %d utterances to %s in %.1f s", len(results) + len(unlabelled), out_dir, elapsed)
    return {**summary, "cached": False, "elapsed_seconds": elapsed}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--num-train", type=int, default=360)
    parser.add_argument("--num-valid", type=int, default=60)
    parser.add_argument("--num-test", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument("--heldout-voices", default=None,
                        help="N (drawn with --seed) or comma-separated voice names that speak only "
                             f"the {UNSEEN_SPLIT} split; voices: {', '.join(VOICES)}")
    parser.add_argument("--num-test-unseen", type=int, default=60,
                        help=f"utterances of {UNSEEN_SPLIT} (with --heldout-voices)")
    parser.add_argument("--unlabelled-hours", type=float, default=0.0,
                        help=f"add {UNLABELLED_SPLIT}.tsv with this many hours of audio (seen voices, no labels)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")

    try:
        summary = make_corpus(args.out_dir, args.num_train, args.num_valid, args.num_test, args.seed,
                              args.workers, args.heldout_voices, args.num_test_unseen, args.unlabelled_hours)
    except ValueError as e:
        parser.error(str(e))
    state = "reused" if summary["cached"] else "generated"
    print(f"{state} corpus in {args.out_dir} ({summary['elapsed_seconds']:.1f} s)")
    for split, s in summary["splits"].items():
        print(f"  {split:11s} {s['count']:6d} utterances {s['seconds']:9.1f} s")
    print(f"  voices: {', '.join(summary['voices'])}")
    if summary.get("heldout_voices"):
        print(f"  held out (only in {UNSEEN_SPLIT}): {', '.join(summary['heldout_voices'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
