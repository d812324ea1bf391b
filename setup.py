"""d2v_plugin: data2vec 2.0 self-supervised learning as a fairseq plugin."""
from setuptools import find_packages, setup

setup(
    name="d2v_plugin",
    version="0.1.0",
    description="data2vec 2.0 pretraining and fine-tuning as a fairseq plugin (--user-dir)",
    packages=find_packages(include=["d2v_plugin", "d2v_plugin.*"]),
    python_requires=">=3.10",
    install_requires=[
        # CPU build from local disk here; an unpinned torch would pull a multi-GB CUDA build.
        "torch==2.13.0",
        # fairseq's main branch repackaged with the Python 3.11 dataclass fix, prebuilt cp311
        # wheel (fairseq==0.12.2 does not install on 3.11). See README "Installation".
        "ve-fairseq==0.12.3",
        # a fresh install otherwise resolves the pre-releases hydra-core 1.4.0rc3 / omegaconf 2.4.1rc1,
        # and fairseq's hydra.experimental.compose import fails with them
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.1,<2.4",
        "soundfile>=0.12",
        "sentencepiece>=0.1.99",
        "numpy>=1.24",
        "editdistance>=0.6",   # WER/CER for ASR evaluation
        "tensorboardX>=2.6",   # fairseq's --tensorboard-logdir
        "hydra-submitit-launcher>=1.2",  # Slurm placement presets (config/pretraining/run_config)
        "pillow>=10",          # image decoding and augmentation (torchvision does not load with this torch)
        "scikit-learn>=1.3",   # logistic-regression probes (d2v-image-probe, d2v-text-probe), digits corpus
    ],
    extras_require={"test": ["pytest>=7"],
                    # lexicon + n-gram LM beam search for d2v-infer --lm (KenLM built in)
                    "lm": ["flashlight-text>=0.0.7"]},
    entry_points={"console_scripts": [
        "d2v-infer=d2v_plugin.asr.infer:cli",
        "d2v-manifest=d2v_plugin.asr.prepare_manifest:cli",
        "d2v-labels=d2v_plugin.asr.prepare_labels:cli",
        "d2v-features=d2v_plugin.asr.extract_features:cli",
        "d2v-lm=d2v_plugin.asr.ngram:cli",
        "d2v-text-prep=d2v_plugin.text.prepare:cli",
        "d2v-text-classification-prep=d2v_plugin.text.classification_prep:cli",
        "d2v-image-probe=d2v_plugin.vision.probe:cli",
        "d2v-text-probe=d2v_plugin.text.probe:cli",
    ]},
)
