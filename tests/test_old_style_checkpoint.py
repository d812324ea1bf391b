"""An older fairseq checkpoint that pickles an argparse.Namespace under ``args`` (as many
published wav2vec 2.0 / data2vec 1.0 checkpoints do) loads once d2v_plugin is imported."""
import pytest

from cli_utils import run_python

MAKE_OLD_CHECKPOINT = """
import torch
from fairseq import options, tasks
parser = options.get_training_parser()
args = options.parse_args_and_arch(parser, [{data!r}, "--task", "audio_pretraining", "--arch", "wav2vec2",
    "--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "2", "--final-dim", "16", "--criterion", "wav2vec",
    "--conv-feature-layers", "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"])
model = tasks.setup_task(args).build_model(args)
torch.save({{"args": args, "cfg": None, "model": model.state_dict(), "extra_state": {{}},
            "optimizer_history": [{{"criterion_name": "Wav2vecCriterion", "optimizer_name": "Adam",
                                    "lr_scheduler_state": {{}}, "num_updates": 7}}]}}, {path!r})
"""

LOAD = """
{prelude}
from fairseq import checkpoint_utils
models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([{path!r}])
print(type(models[0]).__name__, cfg.model.encoder_embed_dim)
"""


@pytest.fixture(scope="module")
def old_checkpoint(speech_corpus, tmp_path_factory):
    path = tmp_path_factory.mktemp("old") / "wav2vec2_args.pt"
    run_python(MAKE_OLD_CHECKPOINT.format(data=str(speech_corpus), path=str(path)))
    return path


def test_args_namespace_checkpoint_loads_with_the_plugin(old_checkpoint):
    out = run_python(LOAD.format(prelude="import d2v_plugin", path=str(old_checkpoint)))
    assert out.split()[-2:] == ["Wav2Vec2Model", "32"]


def test_args_namespace_checkpoint_is_refused_without_the_allow_list(old_checkpoint):
    with pytest.raises(AssertionError, match="Weights only load failed"):
        run_python(LOAD.format(prelude="", path=str(old_checkpoint)))
