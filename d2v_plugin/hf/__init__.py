"""data2vec 2.0 in the Hugging Face ecosystem (``d2v-export-hf``, docs/huggingface.md).

Importing this package registers the exported classes with transformers' Auto classes, so
that where d2v_plugin is installed ``AutoModel.from_pretrained(folder)`` and
``pipeline("automatic-speech-recognition", model=folder)`` work without
``trust_remote_code``. ``modeling_data2vec2`` and ``processing_data2vec2`` import neither
fairseq nor the rest of d2v_plugin: they are the files copied into every exported folder.
"""
from .modeling_data2vec2 import Data2Vec2Config, Data2Vec2ForCTC, Data2Vec2Model
from .processing_data2vec2 import Data2Vec2CTCTokenizer, Data2Vec2FeatureExtractor


def register_auto_classes() -> None:
    """Map ``model_type: data2vec2_multi`` to our classes (idempotent)."""
    from transformers import (AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForCTC,
                              AutoTokenizer)

    try:
        AutoConfig.register(Data2Vec2Config.model_type, Data2Vec2Config)
    except ValueError:  # already registered (this function ran before)
        return
    AutoModel.register(Data2Vec2Config, Data2Vec2Model)
    AutoModelForCTC.register(Data2Vec2Config, Data2Vec2ForCTC)
    AutoFeatureExtractor.register(Data2Vec2Config, Data2Vec2FeatureExtractor)
    AutoTokenizer.register(Data2Vec2Config, slow_tokenizer_class=Data2Vec2CTCTokenizer)


register_auto_classes()
