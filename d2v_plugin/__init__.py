"""data2vec 2.0 as a fairseq plugin: ``--user-dir`` or ``import d2v_plugin`` registers the
task, model and criterion (fairseq auto-imports only ``tasks/`` and ``models/`` of a user
dir, so everything is imported here, in one visible place)."""
from .batching_fix import keep_every_sample
from .checkpoint_safety import allow_fairseq_checkpoint_types

allow_fairseq_checkpoint_types()
keep_every_sample()

from .criterions import data2vec as _criterion  # noqa: E402,F401
from .models import data2vec2 as _model  # noqa: E402,F401
from .models import classification as _classification_model  # noqa: E402,F401
from .tasks import audio_pretraining as _task  # noqa: E402,F401
from .tasks import text_pretraining as _text_task  # noqa: E402,F401
from .tasks import image_pretraining as _image_task  # noqa: E402,F401
from .tasks import image_classification as _image_classification_task  # noqa: E402,F401
