"""Text data for data2vec 2.0 language pretraining.

==================  =======================  =============================================
console script      module                   what it does
==================  =======================  =============================================
``d2v-text-prep``   ``prepare``              raw text -> BPE model, ``dict.txt``, fairseq
                                             ``data-bin`` (also ``python -m``)
``d2v-text-probe``  ``probe``                topic probe of a text checkpoint vs random
                                             init of its architecture (logistic regression)
==================  =======================  =============================================

Library: ``bpe`` (the sentencepiece encoding shared by the command and the probe helper).
The datasets that read ``data-bin`` live in ``d2v_plugin.data.text_dataset``.
"""
