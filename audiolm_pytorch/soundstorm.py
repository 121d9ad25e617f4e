"""SoundStorm (Borsos et al., arXiv 2305.09636): parallel, level-by-level masked generation of RVQ codes.

``ConformerWrapper`` turns a frame of residual codes into one Conformer input vector (per-level embeddings
summed; groups concatenated) and predicts every level with its own output head. ``SoundStorm`` trains it
with the paper's masking scheme (§3.2) and decodes MaskGIT-style (arXiv 2202.04200), level by level,
conditioned on semantic tokens (§3.1) and optionally on an acoustic prompt. ``SemanticToAudio`` (in
``soundstorm_pipeline.py``, re-exported here) chains a semantic transformer, SoundStorm and the codec (the
AudioLM pipeline with SoundStorm replacing the coarse and fine stages).

Code layout: codes are ``(b, n, g·q)`` in the codec's group-major order (``'b n (g q)'``), ``q`` residual
levels per group. A *level* is one residual depth across all groups; levels are decoded coarse to fine.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.lm.sampling import file_end_mask
from audiolm_pytorch.nn.conformer import Conformer
from audiolm_pytorch.utils import beartype, default, eval_mode, exists

_EXTERNAL = ('soundstream', 'wav2vec', 'spear_tts_text_to_semantic')


# masking schedules: fraction of tokens still masked at time t in [0, 1] (1 at t = 0, 0 at t = 1)

def cosine_schedule(t: Tensor) -> Tensor:
    return torch.cos(t * math.pi / 2)


def linear_schedule(t: Tensor) -> Tensor:
    return 1. - t


SCHEDULES: dict[str, Callable[[Tensor], Tensor]] = dict(cosine = cosine_schedule, linear = linear_schedule)


def gumbel_noise(like: Tensor) -> Tensor:
    u = torch.rand_like(like, dtype = torch.float32).clamp(1e-20, 1. - 1e-7)
    return -torch.log(-torch.log(u))


def top_k_filter(logits: Tensor, filter_thres: float) -> Tensor:
    """Keep the ``ceil((1 - filter_thres) * c)`` largest logits (``filter_thres=0`` keeps all)."""
    if filter_thres <= 0.:
        return logits
    k = max(1, math.ceil((1. - filter_thres) * logits.shape[-1]))
    values, _ = logits.topk(k, dim = -1)
    return logits.masked_fill(logits < values[..., -1:], float('-inf'))


@reference_compat('ConformerWrapper')
class ConformerWrapper(Checkpointable, nn.Module):
    """Conformer over frames of residual codes.

    Args:
        codebook_size: codes per codebook (``c``); index ``c`` is each codebook's learned mask token.
        num_quantizers: residual levels per group (``q``).
        conformer: a ``Conformer`` or the keyword arguments to build one.
        grouped_quantizers: codec quantizer groups (``g``); each group gets ``dim // g`` channels, its levels'
            embeddings summed, and the groups concatenated into the model width.
        quantizer_heads: project the conformer output to one ``dim``-wide vector per codebook
            (``Linear(dim, dim·g·q)``, then a shared LayerNorm) before each codebook's logits, as soundstorm-pytorch
            does; ``False``: each codebook's logits straight from the conformer output (versions <= 0.1.0, whose
            checkpoints rebuild that layout).

    ``forward(codes (b, n, g·q), mask=None (b, n), cond=None (b, n, dim), quantizers=None)``
    ``-> logits (b, n, k, c)`` for the ``k`` codebooks named by ``quantizers`` (``(k,)`` or per sample
    ``(b, k)``, indices into ``g·q``; all codebooks when ``None``).
    """

    # checkpoints of versions <= 0.1.0 read the logits straight from the conformer output
    legacy_defaults = dict(quantizer_heads = False)

    @beartype
    def __init__(self, *, codebook_size: int, num_quantizers: int, conformer: dict | Conformer,
                 grouped_quantizers: int = 1, quantizer_heads: bool = True):
        super().__init__()
        if codebook_size < 2 or num_quantizers < 1 or grouped_quantizers < 1:
            raise ValueError('ConformerWrapper needs codebook_size >= 2, num_quantizers >= 1 and '
                             f'grouped_quantizers >= 1, got {codebook_size}, {num_quantizers}, {grouped_quantizers}')
        if isinstance(conformer, dict):
            conformer = Conformer(**conformer)
        dim = conformer.dim
        if dim % grouped_quantizers != 0:
            raise ValueError(f'conformer dim ({dim}) must be divisible by grouped_quantizers ({grouped_quantizers})')

        self.codebook_size, self.num_quantizers, self.grouped_quantizers = codebook_size, num_quantizers, grouped_quantizers
        self.num_effective_quantizers = num_quantizers * grouped_quantizers
        self.mask_id = codebook_size
        self.dim = dim

        self.code_embeds = nn.Embedding(self.num_effective_quantizers * (codebook_size + 1), dim // grouped_quantizers)
        offsets = torch.arange(self.num_effective_quantizers) * (codebook_size + 1)
        self.register_buffer('code_offsets', offsets, persistent = False)

        self.conformer = conformer
        self.heads = self.heads_norm = None
        if quantizer_heads:
            self.heads = nn.Linear(dim, dim * self.num_effective_quantizers)
            self.heads_norm = nn.LayerNorm(dim)
        self.to_logits_weight = nn.Parameter(torch.randn(self.num_effective_quantizers, dim, codebook_size) * dim ** -0.5)
        self.to_logits_bias = nn.Parameter(torch.zeros(self.num_effective_quantizers, codebook_size))

    def level_quantizers(self, level: int) -> list[int]:
        """Indices into ``g·q`` of residual level ``level`` (one per group)."""
        return [group * self.num_quantizers + level for group in range(self.grouped_quantizers)]

    def embed(self, codes: Tensor) -> Tensor:
        if codes.ndim != 3 or codes.shape[-1] != self.num_effective_quantizers:
            raise ValueError(f'codes must be (batch, frames, {self.num_effective_quantizers}), got {tuple(codes.shape)}')
        emb = self.code_embeds(codes + self.code_offsets)                       # (b, n, g·q, d/g)
        return reduce(emb, 'b n (g q) d -> b n (g d)', 'sum', g = self.grouped_quantizers)

    def forward(self, codes: Tensor, *, mask: Tensor | None = None, cond: Tensor | None = None,
                quantizers: Tensor | Sequence[int] | None = None, sum_embeds: Tensor | None = None,
                return_embeddings: bool = False, return_logits_and_embeddings: bool = False):
        """``sum_embeds (b, n, dim)`` is added to the input embeddings like ``cond``. ``return_embeddings``: the
        conformer output ``(b, n, dim)`` instead of logits; ``return_logits_and_embeddings``: both."""
        x = self.embed(codes)
        if exists(cond):
            x = x + cond
        if exists(sum_embeds):
            x = x + sum_embeds
        x = self.conformer(x, mask = mask)                                       # (b, n, dim)
        if return_embeddings:
            return x
        if return_logits_and_embeddings:
            return self._logits(x, quantizers), x
        return self._logits(x, quantizers)

    def _logits(self, x: Tensor, quantizers) -> Tensor:
        if quantizers is None:
            if exists(self.heads):
                x = self.heads_norm(rearrange(self.heads(x), 'b n (k d) -> b n k d', k = self.num_effective_quantizers))
                return torch.einsum('b n k d, k d c -> b n k c', x, self.to_logits_weight) + self.to_logits_bias
            return torch.einsum('b n d, k d c -> b n k c', x, self.to_logits_weight) + self.to_logits_bias
        quantizers = torch.as_tensor(quantizers, device = x.device, dtype = torch.long)
        weight, bias = self.to_logits_weight[quantizers], self.to_logits_bias[quantizers]
        if exists(self.heads):
            # only the requested codebooks' projections: (k, dim_out, dim_in) slices of the heads
            head_weight = rearrange(self.heads.weight, '(k o) i -> k o i', k = self.num_effective_quantizers)
            head_bias = rearrange(self.heads.bias, '(k o) -> k o', k = self.num_effective_quantizers)
            head_weight, head_bias = head_weight[quantizers], head_bias[quantizers]
            if quantizers.ndim == 1:
                x = torch.einsum('b n i, k o i -> b n k o', x, head_weight) + head_bias
                x = self.heads_norm(x)
                return torch.einsum('b n k d, k d c -> b n k c', x, weight) + bias
            x = self.heads_norm(torch.einsum('b n i, b k o i -> b n k o', x, head_weight) + head_bias[:, None])
            return torch.einsum('b n k d, b k d c -> b n k c', x, weight) + bias[:, None]
        if quantizers.ndim == 1:
            return torch.einsum('b n d, k d c -> b n k c', x, weight) + bias
        return torch.einsum('b n d, b k d c -> b n k c', x, weight) + bias[:, None]


class SoundStormLoss(NamedTuple):
    generator_loss: Tensor    # cross entropy on the masked tokens of the chosen level
    accuracy: Tensor          # fraction of those tokens predicted exactly (argmax)
    levels: Tensor            # (b,) residual level trained for each sample


@reference_compat('SoundStorm')
class SoundStorm(Checkpointable, nn.Module):
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
        object.__setattr__(self, '_attached', dict.fromkeys(_EXTERNAL))
        self.soundstream, self.wav2vec, self.spear_tts_text_to_semantic = soundstream, wav2vec, spear_tts_text_to_semantic

        num_semantic_token_ids = default(num_semantic_token_ids, getattr(wav2vec, 'codebook_size', None))
        self.num_semantic_token_ids = num_semantic_token_ids
        self.semantic_token_emb = None
        if exists(num_semantic_token_ids):
            # last index = "no condition" (classifier-free guidance, unconditional training, padding)
            self.semantic_token_emb = nn.Embedding(num_semantic_token_ids + 1, net.dim)

    # ---- attached (not owned) modules -------------------------------------------------------------

    def __setattr__(self, name, value):
        if name in _EXTERNAL:
            self._attach(name, value)
        else:
            super().__setattr__(name, value)

    def __getattr__(self, name):
        if name in _EXTERNAL:
            return self.__dict__.get('_attached', {}).get(name)
        return super().__getattr__(name)

    def __deepcopy__(self, memo):
        # copies (e.g. an EMA model) share the attached codec / tokenizer instead of duplicating them
        for value in self.__dict__.get('_attached', {}).values():
            if exists(value):
                memo[id(value)] = value
        return copy._reconstruct(self, memo, *self.__reduce_ex__(4))

    def _attach(self, name: str, value):
        if name == 'soundstream' and exists(value):
            net = self.net
            for attr in ('num_quantizers', 'codebook_size', 'target_sample_hz', 'downsample_factor'):
                if not hasattr(value, attr):
                    raise ValueError(f'soundstream must follow the codec interface (codecs/base.py); it lacks {attr!r}')
            groups = getattr(value, 'rq_groups', 1)
            if (value.num_quantizers, groups, value.codebook_size) != (net.num_quantizers, net.grouped_quantizers, net.codebook_size):
                raise ValueError(
                    f'codec has {value.num_quantizers} quantizers x {groups} groups of {value.codebook_size} codes, but the '
                    f'ConformerWrapper was built for {net.num_quantizers} x {net.grouped_quantizers} of {net.codebook_size}: '
                    'build it with num_quantizers, grouped_quantizers and codebook_size matching the codec')
            if hasattr(value, 'eval'):
                value.eval()
        if name == 'wav2vec' and exists(value):
            for attr in ('codebook_size', 'target_sample_hz', 'downsample_factor'):
                if not hasattr(value, attr):
                    raise ValueError(f'wav2vec must follow the semantic tokenizer interface (semantic/base.py); it lacks {attr!r}')
            if exists(getattr(self, 'num_semantic_token_ids', None)) and value.codebook_size > self.num_semantic_token_ids:
                raise ValueError(f'wav2vec has {value.codebook_size} ids but the model embeds {self.num_semantic_token_ids}')
            if hasattr(value, 'eval'):
                value.eval()
        self.__dict__['_attached'][name] = value

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        for value in self.__dict__['_attached'].values():
            if isinstance(value, nn.Module):
                value._apply(fn, *args, **kwargs)
        return self

    @property
    def config(self) -> dict:
        config = super().config
        for name in _EXTERNAL:   # attached modules are not part of the checkpoint; their frame rates are
            config[name] = None
        config['num_semantic_token_ids'] = self.num_semantic_token_ids
        config.update({k: v for k, v in self._rate_values().items() if exists(v)})
        return config

    def _rate_values(self) -> dict:
        codec, wav2vec = self.soundstream, self.wav2vec
        rates = dict(self._rates)
        for prefix, module in (('codec', codec), ('wav2vec', wav2vec)):
            for attr in ('target_sample_hz', 'downsample_factor'):
                key = f'{prefix}_{attr}'
                if not exists(rates[key]) and exists(module):
                    rates[key] = int(getattr(module, attr))
        return rates

    @property
    def codec_frame_hz(self) -> float | None:
        r = self._rate_values()
        if exists(r['codec_target_sample_hz']) and exists(r['codec_downsample_factor']):
            return r['codec_target_sample_hz'] / r['codec_downsample_factor']
        return None

    @property
    def semantic_frame_hz(self) -> float | None:
        r = self._rate_values()
        if exists(r['wav2vec_target_sample_hz']) and exists(r['wav2vec_downsample_factor']):
            return r['wav2vec_target_sample_hz'] / r['wav2vec_downsample_factor']
        return None

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

    def _semantic_ratio(self, num_semantic: int, num_frames: int) -> float:
        semantic_hz, codec_hz = self.semantic_frame_hz, self.codec_frame_hz
        if exists(semantic_hz) and exists(codec_hz):
            return semantic_hz / codec_hz
        return num_semantic / num_frames

    def num_frames_for_semantic(self, num_semantic: int) -> int:
        semantic_hz, codec_hz = self.semantic_frame_hz, self.codec_frame_hz
        if exists(semantic_hz) and exists(codec_hz):
            return max(1, math.ceil(num_semantic * codec_hz / semantic_hz - 1e-6))
        return num_semantic

    def align_semantic(self, semantic_token_ids: Tensor, num_frames: int,
                       semantic_per_frame: float | None = None) -> Tensor:
        """Semantic ids ``(b, m)`` -> ``(b, num_frames)``: each codec frame takes the semantic token covering
        its start time (repeats when the semantic rate is lower, decimates when higher). Frames past the end
        of the semantic sequence get ``semantic_pad_id``. ``semantic_per_frame``: the rate ratio, when this
        model was built without the rates (default: from the rates, else ``m / num_frames``)."""
        num_semantic = semantic_token_ids.shape[-1]
        ratio = semantic_per_frame if exists(semantic_per_frame) else self._semantic_ratio(num_semantic, num_frames)
        if num_semantic == num_frames and ratio == 1.:
            return semantic_token_ids
        index = torch.floor(torch.arange(num_frames, device = semantic_token_ids.device) * ratio + 1e-6).long()
        beyond = index >= num_semantic
        aligned = semantic_token_ids[:, index.clamp(max = num_semantic - 1)]
        return aligned.masked_fill(beyond, self.semantic_pad_id)

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

        # prompt: the first t real frames stay visible, t ~ U{0, ..., T - 1}
        num_real = mask.sum(dim = -1)
        rank = mask.long().cumsum(dim = -1) - 1
        prompt_len = (torch.rand(b, device = device) * num_real).floor()
        target = mask & (rank >= prompt_len[:, None])                                   # (b, n) frames to predict

        # level and mask ratio per sample; mask tokens of that level with prob schedule(u)
        level = torch.randint(0, q, (b,), device = device)
        mask_prob = self.schedule(torch.rand(b, device = device))
        token_mask = (torch.rand(b, n, g, device = device) < mask_prob[:, None, None]) & target[..., None]
        # at least one masked token per sample so every sample contributes to the loss
        forced = (torch.rand(b, n, device = device) * target).argmax(dim = -1)
        force = F.one_hot(forced, n).bool() & target & ~token_mask.any(dim = -1).any(dim = -1, keepdim = True)
        token_mask = token_mask | force[..., None]

        level_index = torch.arange(q, device = device)
        is_level = level_index == level[:, None, None, None]                            # (b, 1, 1, q)
        above = (level_index > level[:, None, None, None]) & target[..., None, None]     # finer levels: all masked
        # BERT-style corruption (reference no_replace_prob / random_token_prob), each in half of the batches
        replace = token_mask
        random_tokens = None
        if self.training and self.no_replace_prob > 0. and torch.rand((), device = 'cpu').item() < 0.5:
            replace = replace & ~(torch.rand(replace.shape, device = device) < self.no_replace_prob)
        if self.training and self.random_token_prob > 0. and torch.rand((), device = 'cpu').item() < 0.5:
            random_tokens = replace & (torch.rand(replace.shape, device = device) < self.random_token_prob)
            replace = replace & ~random_tokens
        masked = above | (is_level & replace[..., None]) | ~mask[..., None, None]
        inputs = levels.masked_fill(masked, self.net.mask_id)
        if exists(random_tokens):
            noise = torch.randint(0, self.net.codebook_size, inputs.shape, device = device)
            inputs = torch.where(is_level & random_tokens[..., None] & ~masked, noise, inputs)
        inputs = rearrange(inputs, 'b n g q -> b n (g q)')

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

    # ---- generation ---------------------------------------------------------------------------------

    def _steps_per_level(self, steps, num_full_sampling_levels: int) -> list[int]:
        q = self.net.num_quantizers
        if isinstance(steps, int):
            per_level = [steps] * num_full_sampling_levels + [1] * (q - num_full_sampling_levels)
        else:
            per_level = [int(s) for s in steps]
            if len(per_level) != q:
                raise ValueError(f'steps as a sequence needs one entry per residual level ({q}), got {len(per_level)}')
        if min(per_level) < 1:
            raise ValueError(f'every level needs at least one step, got {per_level}')
        return per_level

    def _logits(self, seq: Tensor, mask: Tensor, cond, null_cond, level: int, cond_scale: float,
                previous: Tensor | None = None):
        """Logits ``(b, n, g, c)`` of ``level`` (guided when ``cond_scale != 1``); with self-conditioning,
        ``(logits, embeddings)`` where ``previous`` are the last step's embeddings (None: the null embedding)."""
        codes = rearrange(seq, 'b n g q -> b n (g q)')
        quantizers = self.net.level_quantizers(level)
        extra = {}
        if self.self_cond:
            previous = self.null_embed.expand(*codes.shape[:2], -1) if previous is None else previous
            extra = dict(sum_embeds = self.to_self_cond(previous), return_logits_and_embeddings = True)
        guided = cond_scale != 1. and exists(null_cond)
        if not guided:
            out = self.net(codes, mask = mask, cond = cond, quantizers = quantizers, **extra)
        else:
            extra = {k: torch.cat((v, v)) if k == 'sum_embeds' else v for k, v in extra.items()}
            out = self.net(torch.cat((codes, codes)), mask = torch.cat((mask, mask)),
                           cond = torch.cat((cond, null_cond)), quantizers = quantizers, **extra)
        logits, embeds = out if self.self_cond else (out, None)
        logits = logits.float()
        if guided:
            conditioned, unconditioned = logits.chunk(2)
            logits = unconditioned + (conditioned - unconditioned) * cond_scale
            embeds = embeds.chunk(2)[0] if exists(embeds) else None
        return (logits, embeds) if self.self_cond else logits

    @torch.no_grad()
    def generate(self, num_latents: int | None = None, *, seconds: float | None = None, batch_size: int | None = None,
                 cond_semantic_token_ids: Tensor | None = None, prompt_acoustic_token_ids: Tensor | None = None,
                 mask: Tensor | None = None, texts: list[str] | None = None, steps: int | Sequence[int] | None = None,
                 num_full_sampling_levels: int | None = None, start_temperature: float = 1., filter_thres: float = 0.7,
                 noise_level_scale: float = 1., cond_scale: float = 1., return_codes: bool = False,
                 text_to_semantic_generate_kwargs: dict | None = None):
        """Level-by-level MaskGIT decoding (paper §3.3).

        Args:
            num_latents: frames to generate (prompt included). seconds: length in seconds (needs the codec's
                rate); otherwise taken from ``mask`` or the semantic condition.
            batch_size: defaults to the batch of the condition / prompt / mask, else 1.
            cond_semantic_token_ids: ``(b, m)`` semantic ids (``semantic_pad_id`` = padding -> padded frames).
            prompt_acoustic_token_ids: ``(b, p, g·q)`` codes of the first ``p`` frames; returned unchanged.
            mask: ``(b, n)`` bool, True = frame to generate. texts: via ``spear_tts_text_to_semantic``.
            steps: iterations on the first ``num_full_sampling_levels`` levels (default ``self.steps``), or a
                sequence with one count per level. Levels past ``num_full_sampling_levels`` are greedy.
            start_temperature: sampling temperature at the first step, annealed linearly towards 0 (0 = greedy).
            filter_thres: top-k filter (keep the top ``1 - filter_thres`` fraction; default 0.7 as in the
            reference, 0 keeps all). noise_level_scale: scale of
                the annealed Gumbel noise on confidences. cond_scale: classifier-free guidance scale.
            return_codes: return codes even when a codec is attached.

        Returns codes ``(b, n, g·q)`` in ``[0, codebook_size)`` (``pad_id`` at padded frames), or with a codec
        audio ``(b, samples)`` (``seconds·sample_hz`` samples when ``seconds`` is given), or a list of 1-D waves
        when ``mask`` gives the samples different lengths.
        """
        with eval_mode(self):
            return self._generate(num_latents, seconds, batch_size, cond_semantic_token_ids, prompt_acoustic_token_ids,
                                  mask, texts, steps, num_full_sampling_levels, start_temperature, filter_thres,
                                  noise_level_scale, cond_scale, return_codes, text_to_semantic_generate_kwargs or {})

    def _generate(self, num_latents, seconds, batch_size, semantic, prompt, mask, texts, steps, num_full_sampling_levels,
                  start_temperature, filter_thres, noise_level_scale, cond_scale, return_codes, tts_kwargs):
        device = self.device
        if exists(texts):
            if not exists(self.spear_tts_text_to_semantic):
                raise ValueError('generate(texts=...) needs a text-to-semantic model: pass spear_tts_text_to_semantic= '
                                 'to SoundStorm (or generate semantic tokens yourself and pass cond_semantic_token_ids=)')
            semantic = self.spear_tts_text_to_semantic.generate(source = texts, source_type = 'text',
                                                                target_type = 'speech', **tts_kwargs)
        if exists(semantic) and not exists(self.semantic_token_emb):
            raise ValueError('cond_semantic_token_ids given but the model has no semantic embedding: pass '
                             'num_semantic_token_ids= (or a wav2vec) to SoundStorm')

        batches = {name: t.shape[0] for name, t in (('cond_semantic_token_ids', semantic),
                                                     ('prompt_acoustic_token_ids', prompt), ('mask', mask)) if exists(t)}
        if exists(batch_size):
            batches['batch_size'] = batch_size
        if len(set(batches.values())) > 1:
            raise ValueError(f'batch sizes disagree: {batches}')
        batch = next(iter(batches.values()), 1)
        if batch < 1:
            raise ValueError(f'nothing to generate: batch size {batch} ({batches})')

        codec_hz = self.codec_frame_hz
        if exists(num_latents):
            num_frames = num_latents
        elif exists(seconds):
            if not exists(codec_hz):
                raise ValueError('seconds= needs the codec frame rate: attach soundstream= (or pass codec_target_sample_hz '
                                 'and codec_downsample_factor to SoundStorm), or pass num_latents=')
            num_frames = math.ceil(seconds * codec_hz - 1e-6)
        elif exists(mask):
            num_frames = mask.shape[-1]
        elif exists(semantic):
            num_frames = self.num_frames_for_semantic(semantic.shape[-1])
        else:
            raise ValueError('give the length: num_latents=, seconds=, mask= or cond_semantic_token_ids=')
        if num_frames < 1:
            raise ValueError(f'need at least one frame to generate, got {num_frames}')

        g, q, mask_id = self.net.grouped_quantizers, self.net.num_quantizers, self.net.mask_id
        seq = torch.full((batch, num_frames, g, q), mask_id, device = device, dtype = torch.long)
        prompt_len = 0
        if exists(prompt):
            prompt = prompt.to(device).long()
            self._check_codes(prompt, 'prompt_acoustic_token_ids')
            prompt_len = prompt.shape[1]
            if prompt_len >= num_frames:
                raise ValueError(f'the prompt ({prompt_len} frames) must be shorter than the output ({num_frames} frames)')
            seq[:, :prompt_len] = rearrange(prompt, 'b n (g q) -> b n g q', g = g)

        aligned, mask = self._prepare(seq[..., 0], semantic, mask)
        cond = self.embed_semantic(aligned, batch, num_frames)
        null_cond = self.embed_semantic(None, batch, num_frames) if exists(aligned) and cond_scale != 1. else None
        generate_frames = mask.clone()
        generate_frames[:, :prompt_len] = False

        full_levels = default(num_full_sampling_levels, self.num_full_sampling_levels)
        per_level = self._steps_per_level(default(steps, self.steps), full_levels)

        previous = None   # self-conditioning: the embeddings of the last step
        for level in range(q):
            num_steps, greedy = per_level[level], level >= full_levels or start_temperature <= 0.
            still_masked = generate_frames[..., None].expand(batch, num_frames, g).clone()
            total = still_masked.sum(dim = (1, 2))
            for step in range(num_steps):
                if self.self_cond:
                    logits, previous = self._logits(seq, mask, cond, null_cond, level, cond_scale, previous)
                else:
                    logits = self._logits(seq, mask, cond, null_cond, level, cond_scale)  # (b, n, g, c)
                temperature = start_temperature * (1. - step / num_steps)
                log_probs = logits.log_softmax(dim = -1)
                if greedy:
                    sampled = logits.argmax(dim = -1)
                else:
                    noisy = top_k_filter(logits, filter_thres) / max(temperature, 1e-6) + gumbel_noise(logits)
                    sampled = noisy.argmax(dim = -1)
                confidence = log_probs.gather(-1, sampled[..., None]).squeeze(-1)
                if not greedy and noise_level_scale > 0.:
                    # annealed randomness in which tokens are kept (MaskGIT's choice temperature)
                    confidence = confidence + noise_level_scale * temperature * gumbel_noise(confidence)

                # keep the most confident sampled tokens; the rest stay masked per the schedule
                ratio = torch.tensor((step + 1) / num_steps, device = device)
                num_left = (total.float() * self.schedule(ratio)).floor().long() if step < num_steps - 1 else torch.zeros_like(total)
                if self.can_mask_prev_unmasked:
                    # every generated token competes, revealed ones scored by their current probability: the
                    # least confident are masked again, however early they were revealed
                    candidates = generate_frames[..., None].expand(batch, num_frames, g)
                    tokens = torch.where(still_masked, sampled, seq[..., level])
                    scores = log_probs.gather(-1, tokens.masked_fill(~candidates, 0)[..., None]).squeeze(-1)
                    scores = torch.where(still_masked, confidence, scores)
                    scores = rearrange(scores.masked_fill(~candidates, float('-inf')), 'b n g -> b (n g)')
                    rank = scores.argsort(dim = -1, descending = True, stable = True).argsort(dim = -1, stable = True)
                    keep = rearrange(rank < (total - num_left).clamp(min = 0)[:, None], 'b (n g) -> b n g', g = g) & candidates
                    seq[..., level] = torch.where(keep, tokens, torch.where(candidates, mask_id, seq[..., level]))
                    still_masked = candidates & ~keep
                    continue
                num_reveal = (still_masked.sum(dim = (1, 2)) - num_left).clamp(min = 0)
                confidence = rearrange(confidence.masked_fill(~still_masked, float('-inf')), 'b n g -> b (n g)')
                order = confidence.argsort(dim = -1, descending = True, stable = True)
                rank = order.argsort(dim = -1, stable = True)
                reveal = rearrange(rank < num_reveal[:, None], 'b (n g) -> b n g', g = g) & still_masked
                seq[..., level] = torch.where(reveal, sampled, seq[..., level])
                still_masked = still_masked & ~reveal

        codes = rearrange(seq, 'b n g q -> b n (g q)').masked_fill(~mask[..., None], self.pad_id)
        if return_codes or not exists(self.soundstream):
            return codes
        return self.decode(codes, mask, seconds)

    @torch.no_grad()
    def decode(self, codes: Tensor, mask: Tensor | None = None, seconds: float | None = None):
        """Codes ``(b, n, g·q)`` -> audio ``(b, samples)`` (a list of 1-D waves when ``mask`` lengths differ).
        Without ``mask``, frames holding ``pad_id`` (as ``generate`` writes them) are taken as padding."""
        codec = self.soundstream
        if not exists(codec):
            raise ValueError('decoding needs a codec: attach soundstream=')
        codec.eval()
        if not exists(mask) and not 0 <= self.pad_id < self.net.codebook_size and bool((codes == self.pad_id).any()):
            mask = (codes != self.pad_id).all(dim = -1)   # generate's padded frames: never decode pad_id as a code
        if exists(mask) and not bool(mask.all()):
            lengths = mask.sum(dim = -1)
            waves = [codec.decode_from_codebook_indices(c[m][None]).reshape(-1) for c, m in zip(codes, mask)]
            if len(set(lengths.tolist())) == 1:
                return torch.stack(waves)
            return waves
        wave = codec.decode_from_codebook_indices(codes)
        wave = wave.reshape(wave.shape[0], -1)
        if exists(seconds):
            wave = wave[:, :round(seconds * codec.target_sample_hz)]
        return wave
