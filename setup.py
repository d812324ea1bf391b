"""d2v_plugin: data2vec 2.0 self-supervised learning as a fairseq plugin."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class build_py_with_configs(build_py):
    """Ship the repository's hydra configs (``config/``) in the wheel as ``d2v_plugin/config/``.

    ``config/`` stays at the repository root, where ``--config-dir config/pretraining`` finds
    it in a clone; an installed package finds its copy through ``d2v-config-dir`` /
    ``d2v_plugin.resources.config_dir()``. An editable install reads the root folder itself.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "d2v_plugin" / "config"
        shutil.rmtree(target, ignore_errors=True)  # a reused build/ must not keep deleted configs
        shutil.copytree(HERE / "config", target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(
    name="d2v_plugin",
    version="0.1.0",
    description="data2vec 2.0 pretraining and fine-tuning as a fairseq plugin (--user-dir)",
    packages=find_packages(include=["d2v_plugin", "d2v_plugin.*"]),
    # ve-fairseq 0.12.3 is published as cp311 and cp312 wheels only (no sdist); tested on 3.11.
    python_requires=">=3.11,<3.13",
    install_requires=[
        # A range, so pip keeps the torch a machine already has (CPU or a CUDA build); the exact
        # versions the suite runs with are in constraints.txt (`make` installs with -c). Lower
        # bound: torch.load's weights_only=True default (2.6), which checkpoint_safety.py
        # allow-lists for; upper bound: the newest release tested. See docs/tools.md.
        "torch>=2.6,<2.14",
        # fairseq's main branch repackaged with the Python 3.11 dataclass fix, prebuilt cp311/cp312
        # wheels (fairseq==0.12.2 does not install on 3.11). To use your own fairseq checkout
        # instead, see docs/tools.md ("Your own fairseq").
        "ve-fairseq==0.12.3",
        # fairseq imports hydra.experimental.compose, gone in hydra-core 1.4; hydra-submitit-launcher
        # asks for "hydra-core>=1.1.0.dev7", which lets pip pick the 1.4.0rc3 pre-release (and
        # omegaconf 2.4.1rc1) on a fresh install: fairseq-hydra-train then fails at import.
        "hydra-core>=1.3.2,<1.4",
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
                    "lm": ["flashlight-text>=0.0.7"],
                    # d2v-export-hf and the exported models (tested with transformers 5.25.0,
                    # safetensors 0.8.0; neither pulls another torch)
                    "hf": ["transformers>=5.25,<6", "safetensors>=0.8,<1"],
                    # d2v-plot: training curves from fairseq logs as a PNG
                    "plot": ["matplotlib>=3.7"]},
    cmdclass={"build_py": build_py_with_configs},
    entry_points={"console_scripts": [
        "d2v-train=d2v_plugin.train:cli",
        "d2v-config-dir=d2v_plugin.resources:config_dir_cli",
        "d2v-plot=d2v_plugin.plot:cli",
        "d2v-infer=d2v_plugin.asr.infer:cli",
        "d2v-transcribe=d2v_plugin.asr.transcribe:cli",
        "d2v-manifest=d2v_plugin.asr.prepare_manifest:cli",
        "d2v-labels=d2v_plugin.asr.prepare_labels:cli",
        "d2v-features=d2v_plugin.asr.extract_features:cli",
        "d2v-lm=d2v_plugin.asr.ngram:cli",
        "d2v-text-prep=d2v_plugin.text.prepare:cli",
        "d2v-text-classification-prep=d2v_plugin.text.classification_prep:cli",
        "d2v-image-probe=d2v_plugin.vision.probe:cli",
        "d2v-text-probe=d2v_plugin.text.probe:cli",
        "d2v-export-hf=d2v_plugin.hf.export:cli",
        "d2v-speech-probe=d2v_plugin.asr.probe:cli",
    ]},
)
