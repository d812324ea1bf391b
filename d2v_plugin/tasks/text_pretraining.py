"""The text pretraining task: fairseq data-bin (``d2v-text-prep``) -> token blocks + the batch expander."""
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.tasks import register_task
from omegaconf import II, MISSING

from ..data.text_dataset import BREAK_MODES, TextPretrainingDataset, load_text_blocks, load_text_dictionary
from .base import MaskedPretrainingTask

logger = logging.getLogger(__name__)


@dataclass
class Data2VecTextPretrainingConfig(FairseqDataclass):
    data: str = field(
        default=MISSING, metadata={"help": "data-bin folder: dict.txt and {split}.bin/.idx (d2v-text-prep)"})
    tokens_per_sample: int = field(
        default=512, metadata={"help": "block length: <s> + tokens_per_sample - 1 tokens of the stream; "
                                       "at most model.modalities.text.max_source_positions"})
    sample_break_mode: ChoiceEnum(list(BREAK_MODES)) = field(
        default="none", metadata={"help": "none: the split is one stream cut into full blocks (the "
                                          "reference's); complete: blocks of whole lines (more padding)"})
    seed: int = II("common.seed")


@register_task("data2vec_text_pretraining", dataclass=Data2VecTextPretrainingConfig)
class Data2VecTextPretrainingTask(MaskedPretrainingTask):
    """Text: ``dict.txt`` + ``<mask>`` (the indices of fairseq's masked_lm, so reference text
    checkpoints line up), blocks of ``tokens_per_sample`` tokens; the collater adds the batch
    expander's masks (M = model.clone_batch masks per block, seeded per batch)."""

    cfg: Data2VecTextPretrainingConfig
    modality = "TEXT"

    def __init__(self, cfg: Data2VecTextPretrainingConfig, dictionary: Optional[Dictionary]):
        super().__init__(cfg)
        self.dictionary = None
        if dictionary is not None:
            self._set_dictionary(dictionary)

    @classmethod
    def setup_task(cls, cfg: Data2VecTextPretrainingConfig, from_checkpoint: bool = False, **kwargs):
        try:
            dictionary = load_text_dictionary(cfg.data)
        except FileNotFoundError:
            if not from_checkpoint:
                raise
            # A checkpoint whose data-bin moved: the dictionary saved with it (task_state) is
            # restored by load_state_dict before the model is built.
            logger.info("%s/dict.txt not found: using the dictionary saved in the checkpoint", cfg.data)
            return cls(cfg, None)
        logger.info("dictionary: %d types (with <mask>)", len(dictionary))
        return cls(cfg, dictionary)

    def _set_dictionary(self, dictionary: Dictionary) -> None:
        """Keep the dictionary, and its symbols in the task state fairseq saves in checkpoints
        (plain lists, loadable with weights_only=True)."""
        self.dictionary = dictionary
        self.state.merge_state_dict({"dictionary_symbols": list(dictionary.symbols),
                                     "dictionary_counts": [int(c) for c in dictionary.count]})

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        symbols = state_dict.get("dictionary_symbols")
        if symbols is not None:
            if self.dictionary is None:
                saved = Dictionary()  # <s> <pad> </s> <unk>, as in every fairseq dict.txt
                if list(symbols[:saved.nspecial]) != saved.symbols:
                    raise ValueError(f"the checkpoint's dictionary starts with {symbols[:4]}, not "
                                     f"fairseq's special symbols {saved.symbols}")
                saved.symbols, saved.count = list(symbols), list(state_dict["dictionary_counts"])
                saved.indices = {s: i for i, s in enumerate(saved.symbols)}
                self._set_dictionary(saved)
            elif list(self.dictionary.symbols) != list(symbols):
                raise ValueError(f"{self.cfg.data}/dict.txt ({len(self.dictionary)} symbols) is not "
                                 f"the dictionary this checkpoint was trained with ({len(symbols)} "
                                 f"symbols): token ids would not match its embeddings")
        super().load_state_dict(state_dict)

    def build_model(self, model_cfg, from_checkpoint: bool = False):
        model = super().build_model(model_cfg, from_checkpoint)
        limit = self.modality_cfg.max_source_positions
        if self.cfg.tokens_per_sample > limit:
            raise ValueError(f"task.tokens_per_sample={self.cfg.tokens_per_sample} exceeds "
                             f"model.modalities.text.max_source_positions={limit}")
        return model

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        self.require_model()
        blocks = load_text_blocks(self.cfg.data, split, self.dictionary, self.cfg.tokens_per_sample,
                                  self.cfg.sample_break_mode)
        self.datasets[split] = TextPretrainingDataset(
            blocks, self.dictionary, expander=self.expander,
            seed=self.cfg.seed, shuffle=split == "train")

    @property
    def source_dictionary(self):
        return self.dictionary

    @property
    def target_dictionary(self):
        return self.dictionary

    def max_positions(self):
        return self.cfg.tokens_per_sample
