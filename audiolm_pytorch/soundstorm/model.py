"""``SoundStorm`` (Borsos et al., arXiv 2305.09636): parallel, level-by-level masked generation of RVQ codes,
conditioned on semantic tokens (§3.1) and optionally on an acoustic prompt.

This module holds the model: construction, its inputs (codes or audio, semantic condition, padding) and the
training loss (§3.2). Its parts live beside it in the package: ``wrapper.py`` (``ConformerWrapper``),
``masking.py`` (schedules, training mask), ``decoding.py`` (MaskGIT generation, §3.3), ``alignment.py``
(semantic / codec frame rates) and ``attached.py`` (the attached codec and tokenizers).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.lm.sampling import file_end_mask
from audiolm_pytorch.soundstorm.alignment import RateAlignmentMixin
from audiolm_pytorch.soundstorm.attached import EXTERNAL, AttachedModulesMixin
from audiolm_pytorch.soundstorm.decoding import MaskGITDecodingMixin
from audiolm_pytorch.soundstorm.masking import SCHEDULES, training_inputs
from audiolm_pytorch.soundstorm.wrapper import ConformerWrapper
from audiolm_pytorch.utils import beartype, default, exists


class SoundStormLoss(NamedTuple):
    generator_loss: Tensor    # cross entropy on the masked tokens of the chosen level
    accuracy: Tensor          # fraction of those tokens predicted exactly (argmax)
    levels: Tensor            # (b,) residual level trained for each sample


@reference_compat('SoundStorm')
class SoundStorm(AttachedModulesMixin, RateAlignmentMixin, MaskGITDecodingMixin, Checkpointable, nn.Module):
    """Masked parallel generation of codec codes, conditioned on semantic tokens.

    Args:
        net: ``ConformerWrapper``.
        soundstream: optional codec (``codecs.base.Codec``): ``forward`` then takes raw audio and
            ``generate`` returns audio. wav2vec: optional semantic tokenizer producing the condition from audio.
        spear_tts_text_to_semantic: optional text-to-semantic model for ``generate(texts=...)``.
        steps: decoding iterations on the fully sampled levels (the paper uses 16 on level 1, 1 elsewhere).
        schedule: ``'linear'`` (default, as in soundstorm-pytorch) or ``'cosine'`` (MaskGIT) masking schedule.
        no_replace_prob / random_token_prob: BERT-style corruption in training (reference defaults 0.15 / 0.1):
            in half of the batches that fraction of the masked tokens keeps its true code, in half (of the rest)
            gets a random code, instead of the mask token; the loss still covers all of them.
        can_mask_prev_unmasked: in generation, tokens revealed at an earlier step may be masked again when later
            predictions are more confident (reference default True); False keeps every revealed token.
        self_cond / self_cond_train_prob: self-conditioning (as in soundstorm-pytorch): the net also sees a
            projection of its own previous output embeddings (a learned null embedding at first); in training a
            first no-grad pass provides them with probability ``self_cond_train_prob``.
        num_semantic_token_ids: semantic vocabulary (defaults to ``wav2vec.codebook_size``); enables conditioning.
        semantic_pad_id: semantic id marking padding; frames it covers are treated as padding.
        pad_id: code written at padded frames of generated codes; in ``forward`` (without ``mask=``), frames of
            the input codes holding it mark padding, as in the reference (when it lies outside the codebook).
        cond_drop_prob: training probability of dropping the semantic condition (enables ``cond_scale > 1``).
        num_full_sampling_levels: levels decoded by temperature sampling with ``steps`` iterations; later
            levels are decoded greedily in one step (paper §3.3).
        codec_target_sample_hz, codec_downsample_factor, wav2vec_target_sample_hz, wav2vec_downsample_factor:
            frame rates used to align semantic tokens with codec frames (read from the attached modules when
            not given; with neither, semantic tokens are stretched to the code length).

    The codec, semantic tokenizer and text-to-semantic model are attached, not owned: they are moved with
    ``.to()`` but are not in ``state_dict()`` / checkpoints (their frame rates are); reattach after loading
    with ``model.soundstream = codec``.
    """

    @beartype
    def __init__(self, net: ConformerWrapper, *, soundstream = None, wav2vec = None, spear_tts_text_to_semantic = None,
                 steps: int = 18, schedule: str = 'linear', num_semantic_token_ids: int | None = None,
                 semantic_pad_id: int = -1, pad_id: int = -1, cond_drop_prob: float = 0.,
                 num_full_sampling_levels: int = 1, codec_target_sample_hz: int | None = None,
                 codec_downsample_factor: int | None = None, wav2vec_target_sample_hz: int | None = None,
                 wav2vec_downsample_factor: int | None = None, no_replace_prob: float = 0.15,
                 random_token_prob: float = 0.1, can_mask_prev_unmasked: bool = True, self_cond: bool = False,
                 self_cond_train_prob: float = 0.75):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f'schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}')
        if steps < 1 or not 1 <= num_full_sampling_levels <= net.num_quantizers:
            raise ValueError(f'need steps >= 1 and 1 <= num_full_sampling_levels <= {net.num_quantizers}')
        if not 0. <= cond_drop_prob < 1.:
            raise ValueError(f'cond_drop_prob must be in [0, 1), got {cond_drop_prob}')
        if not (0. <= no_replace_prob <= 1. and 0. <= random_token_prob <= 1. and no_replace_prob + random_token_prob <= 1.):
            raise ValueError(f'no_replace_prob ({no_replace_prob}) and random_token_prob ({random_token_prob}) must be '
                             'probabilities summing to at most 1')
        self.no_replace_prob, self.random_token_prob = no_replace_prob, random_token_prob
        self.can_mask_prev_unmasked = can_mask_prev_unmasked
        self.self_cond, self.self_cond_train_prob = self_cond, self_cond_train_prob
        self.null_embed = nn.Parameter(torch.randn(net.dim) * 0.02) if self_cond else None
        self.to_self_cond = nn.Linear(net.dim, net.dim, bias = False) if self_cond else None
        self.net = net
        self.steps, self.schedule_name, self.schedule = steps, schedule, SCHEDULES[schedule]
        self.semantic_pad_id, self.pad_id, self.cond_drop_prob = semantic_pad_id, pad_id, cond_drop_prob
        self.num_full_sampling_levels = num_full_sampling_levels
        self._rates = dict(codec_target_sample_hz = codec_target_sample_hz, codec_downsample_factor = codec_downsample_factor,
                           wav2vec_target_sample_hz = wav2vec_target_sample_hz, wav2vec_downsample_factor = wav2vec_downsample_factor)
        object.__setattr__(self, '_attached', dict.fromkeys(EXTERNAL))
        self.soundstream, self.wav2vec, self.spear_tts_text_to_semantic = soundstream, wav2vec, spear_tts_text_to_semantic

        num_semantic_token_ids = default(num_semantic_token_ids, getattr(wav2vec, 'codebook_size', None))
        self.num_semantic_token_ids = num_semantic_token_ids
        self.semantic_token_emb = None
        if exists(num_semantic_token_ids):
            # last index = "no condition" (classifier-free guidance, unconditional training, padding)
            self.semantic_token_emb = nn.Embedding(num_semantic_token_ids + 1, net.dim)

    # ---- checkpoint config and device ---------------------------------------------------------------

    @property
    def config(self) -> dict:
        config = super().config
        for name in EXTERNAL:   # attached modules are not part of the checkpoint; their frame rates are
            config[name] = None
        config['num_semantic_token_ids'] = self.num_semantic_token_ids
        config.update({k: v for k, v in self._rate_values().items() if exists(v)})
        return config

    @property
    def device(self) -> torch.device:
        return self.net.code_offsets.device

    # ---- inputs -------------------------------------------------------------------------------------

    @torch.no_grad()
    def tokenize(self, audio: Tensor) -> Tensor:
        """Raw audio ``(b, n)`` / ``(b, 1, n)`` at the codec's rate -> codes ``(b, frames, g·q)``."""
        if not exists(self.soundstream):
            raise ValueError('raw audio needs a codec: pass soundstream= to SoundStorm (or pass codes (b, n, q))')
        self.soundstream.eval()
        codes = self.soundstream.tokenize(audio).long()
        if codes.ndim != 3 or codes.shape[-1] != self.net.num_effective_quantizers:
            raise ValueError(f'codec returned codes of shape {tuple(codes.shape)}, expected (b, frames, {self.net.num_effective_quantizers})')
        return codes

    @torch.no_grad()
    def semantic_tokens_from_audio(self, audio: Tensor) -> Tensor:
        if audio.ndim == 3:
            audio = rearrange(audio, 'b 1 n -> b n')
        sample_hz = self._rate_values()['codec_target_sample_hz']
        if hasattr(self.wav2vec, 'eval'):
            self.wav2vec.eval()
        return self.wav2vec(audio, input_sample_hz = sample_hz).long()

    def embed_semantic(self, aligned: Tensor | None, batch: int, num_frames: int, drop_prob: float = 0.) -> Tensor | None:
        """Aligned semantic ids ``(b, n)`` (or ``None`` = unconditional) -> condition ``(b, n, dim)``."""
        if not exists(self.semantic_token_emb):
            if exists(aligned):
                raise ValueError('semantic tokens were given but the model has no semantic embedding: pass '
                                 'num_semantic_token_ids= (or a wav2vec) to SoundStorm')
            return None
        null_id = self.num_semantic_token_ids
        if not exists(aligned):
            ids = torch.full((batch, num_frames), null_id, device = self.device, dtype = torch.long)
        else:
            is_pad = aligned == self.semantic_pad_id
            valid_ids = aligned[~is_pad]
            if valid_ids.numel() and (valid_ids.min() < 0 or valid_ids.max() >= null_id):
                raise ValueError(f'semantic token ids must be in [0, {null_id}) (or {self.semantic_pad_id} for padding), '
                                 f'got range [{int(valid_ids.min())}, {int(valid_ids.max())}]')
            ids = aligned.masked_fill(is_pad, null_id)
            if drop_prob > 0.:
                dropped = torch.rand(batch, device = ids.device) < drop_prob
                ids = ids.masked_fill(dropped[:, None], null_id)
        return self.semantic_token_emb(ids)

    def _check_codes(self, codes: Tensor, name: str = 'codes'):
        q = self.net.num_effective_quantizers
        if codes.ndim != 3 or codes.shape[-1] != q:
            raise ValueError(f'{name} must be (batch, frames, {q}), got {tuple(codes.shape)}')
        if codes.shape[0] == 0:
            raise ValueError(f'{name} is an empty batch (shape {tuple(codes.shape)}): pass at least one sequence')
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.net.codebook_size):
            raise ValueError(f'{name} must lie in [0, {self.net.codebook_size}), got range '
                             f'[{int(codes.min())}, {int(codes.max())}]')

    def _trailing_padding(self, codes: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Codes right-padded with -1 (``collate_pad``) -> codes with 0 there and the frame mask without them.
        -1 anywhere else (not whole frames at the end of a row, outside ``mask``) is an error."""
        is_pad = codes == -1
        if exists(mask) and mask.shape == codes.shape[:2]:
            is_pad = is_pad & mask.to(codes.device).bool()[..., None]
        if not bool(is_pad.any()):
            return codes, mask
        pad_frame = is_pad.all(dim = -1)
        trailing = pad_frame.flip(1).long().cumprod(dim = 1).flip(1).bool()    # pad frames up to the row's end
        if bool((is_pad & ~trailing[..., None]).any()):
            raise ValueError(f'codes hold -1 inside a row: padding must be whole frames at the end of a row '
                             f'(collate_pad), or pass mask= (True = real frame); real codes lie in '
                             f'[0, {self.net.codebook_size})')
        mask = ~trailing if mask is None else (mask.to(codes.device).bool() & ~trailing)
        return codes.masked_fill(trailing[..., None], 0), mask

    def _prepare(self, codes: Tensor, semantic: Tensor | None, mask: Tensor | None):
        """Shared by forward / generate: -> aligned semantic ids or None, frame mask (b, n) bool."""
        batch, num_frames = codes.shape[:2]
        if exists(mask):
            if mask.shape != (batch, num_frames):
                raise ValueError(f'mask must be (batch, frames) = {(batch, num_frames)}, got {tuple(mask.shape)}')
            mask = mask.to(codes.device).bool()
        else:
            mask = torch.ones(batch, num_frames, dtype = torch.bool, device = codes.device)
        aligned = None
        if exists(semantic):
            semantic = semantic.to(codes.device).long()
            if semantic.ndim != 2 or semantic.shape[0] != batch:
                raise ValueError(f'cond_semantic_token_ids must be (batch={batch}, m), got {tuple(semantic.shape)}')
            aligned = self.align_semantic(semantic, num_frames)
            mask = mask & (aligned != self.semantic_pad_id)
        return aligned, mask

    # ---- training -----------------------------------------------------------------------------------

    def forward(self, x: Tensor, *, cond_semantic_token_ids: Tensor | None = None, mask: Tensor | None = None,
                return_loss_breakdown: bool = True, file_end: Tensor | bool | None = None):
        """Masked-token loss on one random residual level per sample (paper §3.2).

        Args:
            x: codes ``(b, n, g·q)`` (integers; frames holding ``-1`` — ``data.PAD_ID``, what ``collate_pad``
                writes — are padding), or raw audio ``(b, n)`` / ``(b, 1, n)`` (floats) with a codec attached.
            cond_semantic_token_ids: ``(b, m)`` semantic ids (computed from audio by ``wav2vec`` when absent);
                aligned to the codec frame rate. mask: ``(b, n)`` bool, True = real frame.
            file_end: accepted like the stage wrappers' (``(b,)`` bool, a bool or None) and checked; SoundStorm
                has no EOS (it fills a given number of frames), so it changes nothing.

        Padded frames (``mask`` False, ``-1`` codes, or semantic padding) are never targets: they add nothing
        to the loss or its gradient, and attention and convolutions do not see them.

        Returns ``(loss, SoundStormLoss)`` (only the loss with ``return_loss_breakdown=False``).
        """
        file_end_mask(file_end, x.shape[0], x.device)   # checked only: no EOS in SoundStorm
        if not x.is_floating_point() and x.ndim == 3 and self.pad_id != -1:
            # collate_pad's -1 frames; with pad_id = -1 (the default) the reference rule below covers them
            x, mask = self._trailing_padding(x, mask)
        if x.is_floating_point():
            audio = x
            codes = self.tokenize(audio)
            if not exists(cond_semantic_token_ids) and exists(self.wav2vec):
                cond_semantic_token_ids = self.semantic_tokens_from_audio(audio)
        else:
            codes = x.long()
            if exists(mask) and mask.shape == codes.shape[:2]:
                # padded frames may hold anything (e.g. generate's pad_id): they are masked out below
                codes = codes.masked_fill(~mask.to(codes.device).bool()[..., None], 0)
            elif not exists(mask) and not 0 <= self.pad_id < self.net.codebook_size:
                # as in soundstorm-pytorch: frames holding pad_id (an id outside the codebook) are padding
                is_pad = (codes == self.pad_id).any(dim = -1)
                if bool(is_pad.any()):
                    mask = ~is_pad
                    codes = codes.masked_fill(is_pad[..., None], 0)
        self._check_codes(codes)
        codes = codes.to(self.device)
        aligned, mask = self._prepare(codes, cond_semantic_token_ids, mask)
        if not bool(mask.any(dim = -1).all()):
            raise ValueError('every sample needs at least one real (unmasked, non-padding) frame')

        b, n, _ = codes.shape
        g, q = self.net.grouped_quantizers, self.net.num_quantizers
        device = codes.device
        levels = rearrange(codes, 'b n (g q) -> b n g q', g = g)

        inputs, token_mask, level = training_inputs(
            levels, mask, schedule = self.schedule, mask_id = self.net.mask_id, codebook_size = self.net.codebook_size,
            no_replace_prob = self.no_replace_prob, random_token_prob = self.random_token_prob,
            corrupt = self.training)

        cond = self.embed_semantic(aligned, b, n, drop_prob = self.cond_drop_prob if self.training else 0.)
        quantizers = torch.arange(g, device = device) * q + level[:, None]             # (b, g)
        extra = {}
        if self.self_cond:
            previous = self.null_embed.expand(b, n, -1)
            if self.training and torch.rand((), device = 'cpu').item() < self.self_cond_train_prob:
                with torch.no_grad():
                    previous = self.net(inputs, mask = mask, cond = cond, return_embeddings = True).detach()
            extra = dict(sum_embeds = self.to_self_cond(previous))
        logits = self.net(inputs, mask = mask, cond = cond, quantizers = quantizers, **extra)   # (b, n, g, c)

        labels = levels.gather(-1, level[:, None, None, None].expand(b, n, g, 1)).squeeze(-1)
        loss = F.cross_entropy(logits[token_mask].float(), labels[token_mask])
        if not return_loss_breakdown:
            return loss
        with torch.no_grad():
            accuracy = (logits[token_mask].argmax(dim = -1) == labels[token_mask]).float().mean()
        return loss, SoundStormLoss(loss.detach(), accuracy, level)

