"""What the data2vec tasks share: raw inputs without a vocabulary (``RawInputTask``), and for
pretraining the batch expander (``data/expander.py``), built from the model.

fairseq builds the model before it loads any dataset, so ``build_model`` is where the task
learns M (``clone_batch``) and how to sample the student masks. The model config is then the
single source of truth for masking, and the masks are sampled in the data loader's workers
from a generator seeded by (seed, epoch, sample ids) -- exact resume needs nothing else.
"""
from typing import Optional

from fairseq.tasks import FairseqTask

from ..data.expander import BatchExpander
from ..models.modality_encoders import MODALITY_ENCODERS


class RawInputTask(FairseqTask):
    """A task on raw inputs (audio, pixels, or token ids whose vocabulary a subclass provides):
    no dictionaries and no length limit unless a subclass says otherwise."""

    @property
    def source_dictionary(self):
        return None

    @property
    def target_dictionary(self):
        return None

    def max_positions(self):
        return None


class MaskedPretrainingTask(RawInputTask):
    modality: str = ""  # set by each subclass: "AUDIO", "IMAGE", "TEXT"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.expander: Optional[BatchExpander] = None
        self.modality_cfg = None

    def build_model(self, model_cfg, from_checkpoint: bool = False):
        model = super().build_model(model_cfg, from_checkpoint)
        modality = getattr(model, "modality", None)
        if modality != self.modality:
            raise ValueError(f"task {self.cfg._name} reads {self.modality} data but the model's "
                             f"supported_modality is {modality}: set model.supported_modality="
                             f"{self.modality} (and the matching model.modalities.* section)")
        self.modality_cfg = getattr(model.cfg.modalities, modality.lower())
        self.expander = BatchExpander(model.cfg.clone_batch,
                                      MODALITY_ENCODERS[modality].mask_sampler(self.modality_cfg))
        return model

    @property
    def clone_batch(self) -> Optional[int]:
        """M, the student rows per sample (known once the model is built)."""
        return None if self.expander is None else self.expander.clone_batch

    def require_model(self) -> None:
        if self.expander is None:
            raise RuntimeError("build the model before loading datasets: the batch expander "
                               "takes its masking settings from the model config")
