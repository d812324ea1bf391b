"""ASR tools around fine-tuned data2vec 2.0 checkpoints: data preparation, decoding, scoring,
feature extraction.

Each tool is its own module with a ``main(argv=None)`` that returns its result (for tests
and notebooks) and a console script (``pip install -e .``) that is also ``python -m
d2v_plugin.asr.<module>``; each module's docstring (= its ``--help``) documents formats:

==================  ====================  ===========================================================
console script      module                what it does
==================  ====================  ===========================================================
``d2v-manifest``    ``prepare_manifest``  audio folder -> ``train.tsv``/``valid.tsv`` or ``NAME.tsv``
``d2v-labels``      ``prepare_labels``    transcripts -> ``<split>.wrd/.ltr``, dict
``d2v-infer``       ``infer``             decode + score a split (greedy or LM beam)
``d2v-transcribe``  ``transcribe``        audio files or a manifest -> text, no references
``d2v-lm``          ``ngram``             ARPA bigram LM + lexicon for ``--lm``
``d2v-features``    ``extract_features``  per-utterance ``.npy`` encoder features
==================  ====================  ===========================================================

Libraries: ``decode`` (the decoding path d2v-infer and d2v-transcribe share), ``wer``
(WER/CER), ``ctc`` (greedy CTC, letters -> words), ``checkpoint``
(loading fine-tuned checkpoints without their pretrained file), ``lm_decoder``
(flashlight-text lexicon + KenLM beam search, optional extra ``[lm]``).

This file imports nothing on purpose. (Importing any submodule still runs
``d2v_plugin/__init__.py``, which registers the plugin with fairseq.)
"""
