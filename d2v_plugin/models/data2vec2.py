"""data2vec 2.0 (and the data2vec 1.0 recipe as a configuration of it).

forward = encode local features -> expand & mask (``data/expander.py``) -> student ->
decoder; teacher -> targets; the losses and monitors are ``objective.py``'s. Each stage is a
public method (``student_masks``, ``run_blocks``, ``teacher_targets``, ``objective``), so tools
can observe or time one without touching private code. Registered under the reference implementation's name ``data2vec_multi`` so that its
checkpoints load as they are and fairseq's ``wav2vec_ctc`` fine-tunes ours the same way.
"""
import logging
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
from fairseq.models import BaseFairseqModel, register_model
from fairseq.modules.transformer_sentence_encoder import init_bert_params

from ..data.expander import expand_rows
from ..masking import MaskInfo, mask_info_from_mask
from .config import Data2Vec2Config
from .ema import EMATeacher, ema_decay_at
from .modality import Contextualized, LayerMasks, ModalityEncoder, make_block
from .modality_encoders import MODALITY_ENCODERS
from .objective import ObjectiveResult, pretraining_objective
from .param_groups import mark_no_weight_decay
from .targets import average_top_k

logger = logging.getLogger(__name__)


@register_model("data2vec_multi", dataclass=Data2Vec2Config)
class Data2Vec2Model(BaseFairseqModel):
    def __init__(self, cfg: Data2Vec2Config, skip_ema: bool = False, task=None):
        super().__init__()
        self.cfg = cfg
        self.modality = cfg.supported_modality.upper()
        if self.modality not in MODALITY_ENCODERS:
            raise ValueError(f"supported_modality={cfg.supported_modality!r}: this build knows "
                             f"{sorted(MODALITY_ENCODERS)}")
        modality_cfg = getattr(cfg.modalities, self.modality.lower())
        self.modality_encoders = nn.ModuleDict(
            {self.modality: MODALITY_ENCODERS[self.modality](modality_cfg, cfg, task=task)})
        rates = np.linspace(cfg.start_drop_path_rate, cfg.end_drop_path_rate, cfg.depth)
        self.blocks = nn.ModuleList([make_block(cfg, float(r)) for r in rates])
        self.norm = (nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)
                     if cfg.layer_norm_first else None)
        self.dropout_input = nn.Dropout(cfg.dropout_input) if cfg.dropout_input > 0 else None
        self.apply(init_bert_params)
        for encoder in self.modality_encoders.values():
            encoder.reset_parameters()
        self.num_updates = 0
        self.teacher: Optional[EMATeacher] = None
        if not skip_ema:
            self.teacher = EMATeacher(self._teacher_source(), drop=self._parts_not_in_teacher())
            self.teacher.decay = cfg.ema_decay
        mark_no_weight_decay(self)  # used by recipes whose composite optimizer has a no_decay group

    @classmethod
    def build_model(cls, cfg: Data2Vec2Config, task=None):
        return cls(cfg, task=task)

    def _teacher_source(self) -> nn.Module:
        """What the teacher is an EMA of: the shared blocks only (``ema_encoder_only``, text),
        or the whole model minus the parts listed by ``_parts_not_in_teacher``."""
        return self.blocks if self.cfg.ema_encoder_only else self

    def _parts_not_in_teacher(self) -> List[str]:
        if self.cfg.ema_encoder_only:
            return []
        parts = []
        for name, encoder in self.modality_encoders.items():
            prefix = f"modality_encoders.{name}."
            parts.append(prefix + "decoder")
            if not encoder.cfg.ema_local_encoder:
                parts += [prefix + name for name in encoder.local_modules]
            if encoder.mask_emb is not None:
                parts.append(prefix + "mask_emb")
        return parts

    # ---- training schedule -------------------------------------------------------------
    def set_num_updates(self, num_updates: int) -> None:
        """Called by fairseq before each update's forward: catch the teacher up.

        The teacher remembers the update it last caught up with (saved in checkpoints), so
        after a resume it applies exactly the steps an uninterrupted run would have.
        """
        super().set_num_updates(num_updates)
        teacher = self.teacher
        if teacher is not None and self.training and num_updates > teacher.num_updates:
            decay = ema_decay_at(num_updates, self.cfg.ema_decay, self.cfg.ema_end_decay,
                                 self.cfg.ema_anneal_end_step)
            if teacher.num_updates > 0 or num_updates == 1:
                if decay < 1.0:
                    teacher.step(self._teacher_source(), decay)
            teacher.decay = decay
            teacher.num_updates = num_updates
        self.num_updates = num_updates

    # ---- forward -----------------------------------------------------------------------
    def forward(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                mask: bool = True, features_only: bool = False,
                precomputed_mask: Optional[torch.Tensor] = None, mode: Optional[str] = None,
                remove_extra_tokens: bool = True, **unused):
        """Pretraining: an ``ObjectiveResult`` (what the criterion sums and logs). With
        ``features_only``: ``extract_features``'s dict."""
        if features_only:
            return self.extract_features(source, padding_mask, mask=mask, mode=mode,
                                         remove_extra_tokens=remove_extra_tokens)
        mode = (mode or self.modality).upper()
        encoder = self.modality_encoders[mode]
        clones = self.cfg.clone_batch
        local = encoder.local_features(source)                                 # (B, T, D)
        B, T, _ = local.shape
        frame_padding = encoder.frame_padding_mask(source, padding_mask, T)    # (B, T) | None
        mask_info = self.student_masks(encoder, precomputed_mask, B * clones, T, local.device)
        student_in = encoder.contextualize(
            expand_rows(local, clones), expand_rows(frame_padding, clones), mask_info,
            remove_masked=not self.cfg.encode_masked)
        x, _ = self.run_blocks(self.blocks, student_in, collect=False)         # (B*M, E+K, D)
        prediction = encoder.decode(x, mask_info)                              # (B*M, T, D)
        targets = self.teacher_targets(source, local, frame_padding, mode)     # (B, T, D)
        return self.objective(x, prediction, targets, mask_info, encoder, frame_padding)

    def extract_features(self, source: torch.Tensor, padding_mask: Optional[torch.Tensor] = None,
                         mask: bool = False, mode: Optional[str] = None,
                         remove_extra_tokens: bool = True, **unused) -> Dict:
        """wav2vec 2.0-style features: {"x": (B, T, D), "padding_mask": (B, T) | None,
        "layer_results": per-block target candidates (B, E + T, D)}; ``mask=True`` applies
        fine-tuning-style masking (masked positions replaced, none dropped). Extra tokens (CLS)
        lead "x" unless ``remove_extra_tokens``."""
        encoder = self.modality_encoders[(mode or self.modality).upper()]
        local = encoder.local_features(source)
        B, T, _ = local.shape
        frame_padding = encoder.frame_padding_mask(source, padding_mask, T)
        mask_info = None
        if mask:
            masks = encoder.mask_sampler(encoder.cfg)(B, T, None)
            mask_info = mask_info_from_mask(masks.to(local.device))
        ctx = encoder.contextualize(local, frame_padding, mask_info, remove_masked=False)
        x, layer_results = self.run_blocks(self.blocks, ctx, collect=True)
        padding = ctx.padding_mask if ctx.padding_mask is not None else frame_padding
        if remove_extra_tokens and encoder.num_extra_tokens > 0:
            x = x[:, encoder.num_extra_tokens:]
            padding = frame_padding
        return {"x": x, "padding_mask": padding, "layer_results": layer_results, "mask": mask_info}

    @torch.no_grad()
    def teacher_targets(self, source: torch.Tensor, local: torch.Tensor,
                        frame_padding: Optional[torch.Tensor], mode: Optional[str] = None) -> torch.Tensor:
        """The teacher encodes each unmasked sample once: top-K averaged targets (B, T, D).

        Its input is the student's local features, except with ``ema_local_encoder`` (the
        teacher runs its own copy on the source) and ``ema_encoder_only`` (the teacher is only
        the blocks, fed by the student's own modality encoder).
        """
        if self.teacher is None:
            raise RuntimeError("this model has no teacher (remove_pretraining_modules was called)")
        teacher = self.teacher.model
        if next(teacher.parameters()).device != local.device:
            self.teacher.to(local.device)
        teacher.eval()
        mode = (mode or self.modality).upper()
        if self.cfg.ema_encoder_only:
            encoder = self.modality_encoders[mode]
            ctx = encoder.contextualize(local.detach(), frame_padding, None, remove_masked=False)
            blocks = teacher
        else:
            encoder = teacher.modality_encoders[mode]
            if encoder.cfg.ema_local_encoder:
                local = encoder.local_features(source.float() if source.is_floating_point() else source)
            ctx = encoder.contextualize(local.detach().float(), frame_padding, None, remove_masked=False)
            blocks = teacher.blocks
        ctx = ctx._replace(x=ctx.x.float())
        _, layer_results = self.run_blocks(blocks, ctx, collect=True, training=False)
        extra = encoder.num_extra_tokens
        layer_results = [y[:, extra:] for y in layer_results]
        cfg = self.cfg
        return average_top_k(layer_results, cfg.average_top_k_layers, cfg.instance_norm_target_layer,
                             cfg.layer_norm_target_layer, cfg.layer_norm_targets, cfg.instance_norm_targets)

    def run_blocks(self, blocks: nn.ModuleList, ctx: Contextualized, collect: bool,
                   training: Optional[bool] = None):
        """The shared blocks (the student's, or the teacher's copy) on ``ctx``: the output
        (R, K, D) after the final norm, and with ``collect`` each block's target candidate."""
        training = self.training if training is None else training
        x = ctx.x
        if self.dropout_input is not None and training:
            x = self.dropout_input(x)
        masks = LayerMasks(ctx.alibi_bias, ctx.alibi_scale, ctx.padding_mask, x.dtype)
        layer_results = []
        for i, block in enumerate(blocks):
            if training and self.cfg.layerdrop > 0 and float(torch.rand(())) < self.cfg.layerdrop:
                continue
            x, target = block(x, masks(i))
            if collect:
                layer_results.append(target)
        if self.norm is not None:
            x = self.norm(x)
        return x, layer_results

    def student_masks(self, encoder: ModalityEncoder, precomputed_mask: Optional[torch.Tensor], rows: int,
                      frames: int, device) -> MaskInfo:
        """The batch expander's masks (checked against rows x frames), or masks sampled here
        when the batch has none; as the index tensors the student uses."""
        if precomputed_mask is None:
            precomputed_mask = encoder.mask_sampler(encoder.cfg)(rows, frames, None)
        elif tuple(precomputed_mask.shape) != (rows, frames):
            raise ValueError(f"precomputed_mask has shape {tuple(precomputed_mask.shape)}, expected "
                             f"(batch * clone_batch, frames) = ({rows}, {frames}); does the task's "
                             f"clone_batch match model.clone_batch?")
        return mask_info_from_mask(precomputed_mask.to(device=device, dtype=torch.bool))

    def objective(self, x: torch.Tensor, prediction: torch.Tensor, targets: torch.Tensor,
                  mask_info: MaskInfo, encoder: ModalityEncoder,
                  padding_mask: Optional[torch.Tensor] = None) -> ObjectiveResult:
        """The losses and monitors of one forward (``objective.pretraining_objective``)."""
        return pretraining_objective(self.cfg, self.modality, x, prediction, targets, mask_info,
                                     encoder.num_extra_tokens, self.num_updates,
                                     self.teacher.decay if self.teacher is not None else 0.0,
                                     padding_mask)

    # ---- checkpoints and fine-tuning ---------------------------------------------------
    def remove_pretraining_modules(self, modality: Optional[str] = None, keep_decoder: bool = False):
        """Drop the teacher and decoders for fine-tuning (fairseq's wav2vec_ctc calls this)."""
        self.teacher = None
        self.cfg.clone_batch = 1
        for name in list(self.modality_encoders.keys()):
            if modality is not None and name.lower() != modality.lower():
                del self.modality_encoders[name]
            elif not keep_decoder:
                self.modality_encoders[name].decoder = None

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        state = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if self.teacher is not None:
            state[prefix + "_ema"] = self.teacher.state_dict()
            state[prefix + "_ema_num_updates"] = torch.tensor(self.teacher.num_updates)
        return state

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        ema = state_dict.pop(prefix + "_ema", None)
        ema_updates = state_dict.pop(prefix + "_ema_num_updates", None)
        if self.teacher is not None and ema is not None:
            self.teacher.load_state_dict(ema)
            # Reference checkpoints don't record it: the teacher catches up at the start of
            # each update, so a saved teacher is one step behind the update count (fairseq
            # calls set_num_updates before load_state_dict).
            self.teacher.num_updates = (int(ema_updates) if ema_updates is not None
                                        else max(self.num_updates - 1, 0))
        for name, encoder in self.modality_encoders.items():
            if encoder.decoder is None:  # fine-tuning: ignore the pretraining decoder's weights
                for key in [k for k in state_dict if k.startswith(f"{prefix}modality_encoders.{name}.decoder.")]:
                    del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

