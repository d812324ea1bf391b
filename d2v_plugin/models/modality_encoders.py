"""The modality encoders this build knows, by ``model.supported_modality`` (upper case).

Listed here explicitly, not filled as a side effect of imports: the model builds its encoder
from this table and the pretraining tasks take the matching mask sampler from it.
"""
from typing import Dict, Type

from .audio_encoder import AudioEncoder
from .image_encoder import ImageEncoder
from .modality import ModalityEncoder
from .text_encoder import TextEncoder

MODALITY_ENCODERS: Dict[str, Type[ModalityEncoder]] = {
    "AUDIO": AudioEncoder,
    "IMAGE": ImageEncoder,
    "TEXT": TextEncoder,
}
