"""Semantic, coarse and fine transformer trainers: each builds its wrapper and dataset; the loop is shared."""

from __future__ import annotations

import contextlib
import inspect
import logging
from pathlib import Path

import torch
from einops import rearrange
from torch import nn
from torch.utils.data import DataLoader, Dataset

from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.trainers.base import Batch, Phase, Sample, Trainer, trainer_kwargs
from audiolm_pytorch.utils import beartype, eval_mode, exists

logger = logging.getLogger(__name__)


def _as_wave(output) -> torch.Tensor | None:
    """First generated wave as ``(n,)`` from a ``(b, n)`` / ``(b, 1, n)`` tensor or a list of 1-D waves."""
    if isinstance(output, (list, tuple)):
        output = output[0] if output else None
    if output is None:
        return None
    wave = output.reshape(output.shape[0], -1)[0] if output.ndim > 1 else output
    return wave if wave.numel() > 0 else None


def split_clip_info(batch: Batch) -> tuple[tuple, torch.Tensor | None, torch.Tensor | None]:
    """``(waves, num_samples (b, rates) | None, file_end (b,) | None)`` from a batch of a dataset built with
    ``return_file_end=True`` (its last two fields); other datasets give ``(waves, None, None)``."""
    tensors = batch.waves
    if len(tensors) >= 3 and tensors[-1].dtype == torch.bool and tensors[-1].ndim == 1 \
            and not tensors[-2].is_floating_point() and tensors[-2].ndim == 2:
        return tensors[:-2], tensors[-2], tensors[-1]
    return tensors, None, None


def pad_past_frames(ids: torch.Tensor, num_samples: torch.Tensor | None, downsample_factor: int) -> torch.Tensor:
    """Set the frames of ``ids (b, n[, q])`` that are not wholly inside each row's ``num_samples`` real samples
    to -1 (``data.PAD_ID``): zero-padding of a short file is then never trained on (as silence, then EOS)."""
    if num_samples is None:
        return ids
    frames = num_samples.to(ids.device) // downsample_factor
    past = torch.arange(ids.shape[1], device = ids.device)[None] >= frames[:, None]
    return ids.masked_fill(past[..., None] if ids.ndim == 3 else past, -1)


def accepts_file_end(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes ``file_end`` (the EOS-target flag of each sequence)."""
    return 'file_end' in inspect.signature(module.forward).parameters


def token_dataset(tokens, *, stage: str, data_max_length, data_max_length_seconds, given: dict, **levels):
    """The :class:`~audiolm_pytorch.tokens.TokenDataset` that ``tokens=`` (a token folder or a dataset) means for
    ``stage``; ``data_max_length`` (samples at the highest tokenizer rate the stage reads) or
    ``data_max_length_seconds`` sets its crop. ``given``: the other data arguments, which must be unset."""
    from audiolm_pytorch.tokens import TokenDataset, read_manifest
    clash = [name for name, value in given.items() if exists(value)]
    if clash:
        raise ValueError(f'pass tokens= or {clash[0]}=, not both (tokens= is the whole training data)')
    if isinstance(tokens, TokenDataset):
        if tokens.stage != stage:
            raise ValueError(f'the TokenDataset was built for the {tokens.stage} stage, not {stage}')
        return tokens
    seconds = data_max_length_seconds
    if exists(data_max_length):
        manifest = read_manifest(tokens)
        streams = [manifest.get('semantic') if stage == 'semantic' else manifest.get('codec')]
        if stage == 'coarse':
            streams.append(manifest.get('semantic'))
        seconds = data_max_length / max(s['sample_hz'] for s in streams if exists(s))
    return TokenDataset(tokens, stage = stage, max_seconds = seconds, **levels)


class TransformerTrainer(Trainer):
    """Shared part of the three stage trainers: the wrapper runs forward (DDP wraps it; the frozen tokenizers
    inside are ignored by DDP), the transformer is optimized, saved and (optionally) averaged.

    With ``folder=`` the clips come from ``SoundDataset(return_file_end=True)``: the trainer tokenizes them, marks
    the frames past each clip's real samples as padding (-1, never a target) and passes ``file_end``, so EOS is a
    target only where a clip reaches its file's end — a random crop teaches no stop at its boundary. A
    ``dataset=`` whose items end with the same ``(num_samples, file_end)`` fields gets the same treatment; other
    datasets train as before (every clip a whole sequence ending in EOS).

    Args (besides :class:`~audiolm_pytorch.trainers.base.Trainer`'s):
        data_max_length / data_max_length_seconds: random crop length of training clips (an int counts samples
            at the highest rate the stage reads).
        tokens: a token folder written by ``audiolm prepare`` (or a ``TokenDataset`` for this stage): train from
            pre-computed tokens, cropped in token space; no tokenizer or codec is needed (one given is checked
            against the tokens' identity).
        sample_max_time_steps: length (in codec frames) of the short generation written with the results.
    """

    token_stage = ''

    def __init__(self, transformer: nn.Module, wrapper: nn.Module, *, data_max_length: int | None = None,
                 data_max_length_seconds: float | None = None, tokens = None, sample_max_time_steps: int = 64,
                 lr: float = 3e-4, grad_accum_every: int = 1, **kwargs):
        from audiolm_pytorch.tokens import TokenDataset
        if exists(data_max_length) and exists(data_max_length_seconds):
            raise ValueError('pass data_max_length (samples) or data_max_length_seconds, not both')
        self.transformer, self.train_wrapper = transformer, wrapper
        if exists(tokens):
            given = {name: kwargs.get(name) for name in ('folder', 'dataset', 'train_dataloader')}
            kwargs['dataset'] = token_dataset(tokens, stage = self.token_stage, data_max_length = data_max_length,
                                              data_max_length_seconds = data_max_length_seconds, given = given,
                                              **self.token_levels())
        self.token_data = kwargs.get('dataset') if isinstance(kwargs.get('dataset'), TokenDataset) else None
        if exists(self.token_data):
            self.check_tokens(self.token_data)
        elif exists(data_max_length_seconds):
            data_max_length = int(data_max_length_seconds * max(self.data_sample_rates(wrapper)))
        self.data_max_length, self.sample_max_time_steps = data_max_length, sample_max_time_steps
        self._pass_file_end = accepts_file_end(wrapper)
        super().__init__(transformer, train_module = wrapper, lr = lr, grad_accum_every = grad_accum_every, **kwargs)

    # token shards: which codec levels the stage reads, and the checks of the tokens against the transformer
    def token_levels(self) -> dict:
        return {}

    def check_tokens(self, dataset) -> None:
        raise NotImplementedError

    def token_inputs(self, batch: Batch) -> dict:
        raise NotImplementedError

    def with_file_end(self, inputs: dict, file_end) -> dict:
        """``inputs`` plus ``file_end`` when the wrapper takes it."""
        return dict(inputs, file_end = file_end) if self._pass_file_end else inputs

    # subclasses: which rates the dataset yields and how a batch becomes wrapper keyword arguments
    def data_sample_rates(self, wrapper) -> tuple[int, ...]:
        raise NotImplementedError

    def data_multiples(self) -> tuple:
        raise NotImplementedError

    def wrapper_inputs(self, batch: Batch) -> dict:
        raise NotImplementedError

    def make_dataset(self, folder) -> Dataset:
        from audiolm_pytorch.data import SoundDataset
        rates, multiples = self.data_sample_rates(self.train_wrapper), self.data_multiples()
        if len(rates) == 1:
            rates, multiples = rates[0], multiples[0]
        # items say how much of each clip is real audio and whether it ends its file (see the class docstring)
        return SoundDataset(folder, target_sample_hz = rates, max_length = self.data_max_length,
                            seq_len_multiple_of = multiples, return_file_end = True)

    def phases(self) -> list[Phase]:
        return [Phase('loss', [p for p in self.transformer.parameters() if p.requires_grad], self.max_grad_norm)]

    def compute_loss(self, module: nn.Module, batch: Batch):
        inputs = self.token_inputs(batch) if exists(self.token_data) else self.wrapper_inputs(batch)
        return module(**inputs, text = batch.texts, return_loss = True), {}

    @torch.no_grad()
    def generate(self, *args, **kwargs):
        """Delegates to the wrapper's ``generate`` (see the wrapper for the arguments)."""
        with eval_mode(self.train_wrapper):
            return self.train_wrapper.generate(*args, **kwargs)

    @contextlib.contextmanager
    def sampling_wrapper(self):
        """The wrapper with the EMA transformer in place of the online one (when ``use_ema``), for samples."""
        wrapper, online = self.train_wrapper, self.train_wrapper.transformer
        if not exists(self.ema_model):
            yield wrapper
            return
        wrapper.transformer = self.ema_model
        try:
            yield wrapper
        finally:
            wrapper.transformer = online


def _rate(module) -> int:
    return int(module.target_sample_hz)


@reference_compat('SemanticTransformerTrainer')
class SemanticTransformerTrainer(TransformerTrainer):
    """Train a ``SemanticTransformer`` on semantic ids of audio (``wav2vec`` tokenizes it on the fly).

    Checkpoints: ``results_folder/semantic.transformer.{step}.pt`` (``SemanticTransformer.load`` reads them).
    """

    checkpoint_name = 'semantic.transformer'

    @beartype
    def __init__(self, transformer: nn.Module, wav2vec = None, *, num_train_steps: int, batch_size: int,
                 data_max_length: int | None = None, data_max_length_seconds: float | None = None,
                 folder: str | Path | None = None, dataset: Dataset | None = None, audio_conditioner = None,
                 train_dataloader: DataLoader | None = None, val_dataloader: DataLoader | None = None,
                 lr: float = 3e-4, grad_accum_every: int = 1, wd: float = 0., max_grad_norm: float | None = 0.5,
                 valid_frac: float = 0.05, save_results_every: int = 100, save_model_every: int = 1000,
                 results_folder: str | Path = './results', accelerate_kwargs: dict | None = None,
                 tokens: str | Path | Dataset | None = None, **kwargs):
        from audiolm_pytorch.lm.semantic import SemanticTransformerWrapper
        self.wav2vec = wav2vec
        wrapper = SemanticTransformerWrapper(transformer = transformer, wav2vec = wav2vec, audio_conditioner = audio_conditioner)
        super().__init__(transformer, wrapper, data_max_length = data_max_length, tokens = tokens,
                         data_max_length_seconds = data_max_length_seconds, **trainer_kwargs(locals()), **kwargs)

    token_stage = 'semantic'

    def check_tokens(self, dataset):
        from audiolm_pytorch.tokens import check_tokens_fit
        check_tokens_fit(dataset, model = 'SemanticTransformer', wav2vec = self.wav2vec,
                         num_semantic_tokens = self.transformer.num_semantic_tokens)

    def token_inputs(self, batch: Batch) -> dict:
        ids, file_end = batch.waves
        return self.with_file_end(dict(semantic_token_ids = ids), file_end)

    def data_sample_rates(self, wrapper):
        if not exists(wrapper.wav2vec):
            raise ValueError('training on audio needs wav2vec= (a semantic tokenizer)')
        return (_rate(wrapper.wav2vec),)

    def data_multiples(self):
        return (self.wav2vec.seq_len_multiple_of,)

    def wrapper_inputs(self, batch: Batch) -> dict:
        from audiolm_pytorch.lm.semantic import semantic_ids_from_wave
        waves, num_samples, file_end = split_clip_info(batch)
        if num_samples is None:
            return dict(raw_wave = waves[0])
        ids = semantic_ids_from_wave(self.wav2vec, waves[0])
        ids = pad_past_frames(ids, num_samples[:, 0], self.wav2vec.downsample_factor)
        return dict(semantic_token_ids = ids, raw_wave = waves[0], file_end = file_end)


@reference_compat('CoarseTransformerTrainer')
class CoarseTransformerTrainer(TransformerTrainer):
    """Train a ``CoarseTransformer`` on (semantic ids, first codec levels) of audio, read at both rates.

    Checkpoints: ``results_folder/coarse.transformer.{step}.pt``. Samples: coarse codes generated from a validation
    clip's semantic ids, decoded by the codec.
    """

    checkpoint_name = 'coarse.transformer'

    @beartype
    def __init__(self, transformer: nn.Module, codec = None, wav2vec = None, *, num_train_steps: int, batch_size: int,
                 data_max_length: int | None = None, data_max_length_seconds: float | None = None,
                 folder: str | Path | None = None, dataset: Dataset | None = None, audio_conditioner = None,
                 train_dataloader: DataLoader | None = None, val_dataloader: DataLoader | None = None,
                 lr: float = 3e-4, grad_accum_every: int = 1, wd: float = 0., max_grad_norm: float | None = 0.5,
                 valid_frac: float = 0.05, save_results_every: int = 100, save_model_every: int = 1000,
                 results_folder: str | Path = './results', accelerate_kwargs: dict | None = None,
                 soundstream = None, tokens: str | Path | Dataset | None = None, **kwargs):
        from audiolm_pytorch.lm.coarse import CoarseTransformerWrapper
        codec = codec if exists(codec) else soundstream
        self.codec, self.wav2vec = codec, wav2vec
        wrapper = CoarseTransformerWrapper(transformer = transformer, codec = codec, wav2vec = wav2vec,
                                           audio_conditioner = audio_conditioner)
        super().__init__(transformer, wrapper, data_max_length = data_max_length, tokens = tokens,
                         data_max_length_seconds = data_max_length_seconds, **trainer_kwargs(locals()), **kwargs)

    token_stage = 'coarse'

    def token_levels(self):
        return dict(num_coarse_quantizers = self.transformer.num_coarse_quantizers)

    def check_tokens(self, dataset):
        from audiolm_pytorch.tokens import check_tokens_fit
        t = self.transformer
        check_tokens_fit(dataset, model = 'CoarseTransformer', wav2vec = self.wav2vec, codec = self.codec,
                         num_semantic_tokens = t.num_semantic_tokens, codebook_size = t.codebook_size,
                         rq_groups = t.rq_groups)

    def token_inputs(self, batch: Batch) -> dict:
        semantic, coarse, file_end = batch.waves
        return self.with_file_end(dict(semantic_token_ids = semantic, coarse_token_ids = coarse), file_end)

    def data_sample_rates(self, wrapper):
        if not (exists(wrapper.wav2vec) and exists(wrapper.codec)):
            raise ValueError('training on audio needs both wav2vec= (semantic tokenizer) and codec=')
        return (_rate(wrapper.wav2vec), _rate(wrapper.codec))

    def data_multiples(self):
        return (self.wav2vec.seq_len_multiple_of, self.codec.seq_len_multiple_of)

    def wrapper_inputs(self, batch: Batch) -> dict:
        waves, num_samples, file_end = split_clip_info(batch)
        inputs = dict(raw_wave = waves[0], raw_wave_for_codec = waves[1] if len(waves) > 1 else None)
        if num_samples is None:
            return inputs
        from audiolm_pytorch.lm.coarse import codec_codes
        from audiolm_pytorch.lm.semantic import semantic_ids_from_wave
        t, codec_index = self.transformer, min(1, len(waves) - 1)
        semantic = semantic_ids_from_wave(self.wav2vec, waves[0])
        coarse = codec_codes(self.codec, waves[codec_index], start = 0, stop = t.num_coarse_quantizers,
                             groups = t.rq_groups)
        return dict(inputs, file_end = file_end,
                    semantic_token_ids = pad_past_frames(semantic, num_samples[:, 0], self.wav2vec.downsample_factor),
                    coarse_token_ids = pad_past_frames(coarse, num_samples[:, codec_index], self.codec.downsample_factor))

    @torch.no_grad()
    def make_samples(self, batch: Batch) -> list[Sample]:
        if exists(self.token_data):
            return self._token_samples(batch)
        if not (exists(self.codec) and exists(self.wav2vec)) or len(batch.waves) < 2:
            return []
        semantic_ids = self.wav2vec(batch.waves[0][:1], flatten = True)
        frames = min(self.sample_max_time_steps, max(1, batch.waves[1].shape[-1] // self.codec.downsample_factor))
        with self.sampling_wrapper() as wrapper:
            wave = _as_wave(wrapper.generate(semantic_token_ids = semantic_ids, max_time_steps = frames,
                                             reconstruct_wave = True))
        rate = _rate(self.codec)
        samples = [Sample('original', batch.waves[1][0], rate)]
        return samples + ([Sample('coarse_generated', wave, rate)] if exists(wave) else [])

    def _token_samples(self, batch: Batch) -> list[Sample]:
        """From tokens: coarse codes generated for the first item's semantic ids (needs a codec to decode)."""
        semantic, coarse, _ = batch.waves
        semantic = semantic[:1, :int((semantic[0] >= 0).sum())]
        if not exists(self.codec) or semantic.shape[-1] == 0:
            return []
        frames = min(self.sample_max_time_steps, max(1, int((coarse[0] >= 0).all(dim = -1).sum())))
        with self.sampling_wrapper() as wrapper:
            wave = _as_wave(wrapper.generate(semantic_token_ids = semantic, max_time_steps = frames,
                                             reconstruct_wave = True))
        return [Sample('coarse_generated', wave, _rate(self.codec))] if exists(wave) else []


@reference_compat('FineTransformerTrainer')
class FineTransformerTrainer(TransformerTrainer):
    """Train a ``FineTransformer`` on the codec levels of audio (coarse levels condition the fine ones).

    Checkpoints: ``results_folder/fine.transformer.{step}.pt``. Samples: fine codes generated for a validation
    clip's coarse codes, decoded by the codec.
    """

    checkpoint_name = 'fine.transformer'

    @beartype
    def __init__(self, transformer: nn.Module, codec = None, *, num_train_steps: int, batch_size: int,
                 data_max_length: int | None = None, data_max_length_seconds: float | None = None,
                 folder: str | Path | None = None, dataset: Dataset | None = None, audio_conditioner = None,
                 train_dataloader: DataLoader | None = None, val_dataloader: DataLoader | None = None,
                 lr: float = 3e-4, grad_accum_every: int = 1, wd: float = 0., max_grad_norm: float | None = 0.5,
                 valid_frac: float = 0.05, save_results_every: int = 100, save_model_every: int = 1000,
                 results_folder: str | Path = './results', accelerate_kwargs: dict | None = None,
                 soundstream = None, tokens: str | Path | Dataset | None = None, **kwargs):
        from audiolm_pytorch.lm.fine import FineTransformerWrapper
        codec = codec if exists(codec) else soundstream
        self.codec = codec
        wrapper = FineTransformerWrapper(transformer = transformer, codec = codec, audio_conditioner = audio_conditioner)
        super().__init__(transformer, wrapper, data_max_length = data_max_length, tokens = tokens,
                         data_max_length_seconds = data_max_length_seconds, **trainer_kwargs(locals()), **kwargs)

    token_stage = 'fine'

    def token_levels(self):
        t = self.transformer
        return dict(num_coarse_quantizers = t.num_coarse_quantizers, num_fine_quantizers = t.num_fine_quantizers)

    def check_tokens(self, dataset):
        from audiolm_pytorch.tokens import check_tokens_fit
        t = self.transformer
        check_tokens_fit(dataset, model = 'FineTransformer', codec = self.codec, codebook_size = t.codebook_size,
                         rq_groups = t.rq_groups)

    def token_inputs(self, batch: Batch) -> dict:
        codes, file_end = batch.waves
        return self.with_file_end(dict(token_ids = codes), file_end)

    def data_sample_rates(self, wrapper):
        if not exists(wrapper.codec):
            raise ValueError('training on audio needs codec= (e.g. a SoundStream)')
        return (_rate(wrapper.codec),)

    def data_multiples(self):
        return (self.codec.seq_len_multiple_of,)

    def wrapper_inputs(self, batch: Batch) -> dict:
        waves, num_samples, file_end = split_clip_info(batch)
        if num_samples is None:
            return dict(raw_wave = waves[0])
        from audiolm_pytorch.lm.coarse import codec_codes
        codes = codec_codes(self.codec, waves[0], start = 0, stop = self.codec.num_quantizers,
                            groups = self.transformer.rq_groups)
        return dict(raw_wave = waves[0], file_end = file_end,
                    token_ids = pad_past_frames(codes, num_samples[:, 0], self.codec.downsample_factor))

    @torch.no_grad()
    def make_samples(self, batch: Batch) -> list[Sample]:
        if not exists(self.codec):
            return []
        t = self.transformer   # codes are group-major (g q): keep the coarse levels of EVERY group
        if exists(self.token_data):
            codes = batch.waves[0][:1, :self.sample_max_time_steps]
            codes = codes[:, :int((codes[0] >= 0).all(dim = -1).sum())]
            grouped = rearrange(codes, 'b n (g q) -> b n g q', g = t.rq_groups)[..., :t.num_coarse_quantizers]
            coarse = rearrange(grouped, 'b n g q -> b n (g q)')
            if coarse.shape[1] == 0:
                return []
            with self.sampling_wrapper() as wrapper:
                generated = _as_wave(wrapper.generate(coarse_token_ids = coarse, reconstruct_wave = True))
            return [Sample('fine_generated', generated, _rate(self.codec))] if exists(generated) else []
        wave = batch.waves[0][:1, :self.sample_max_time_steps * self.codec.seq_len_multiple_of]
        from audiolm_pytorch.lm.coarse import codec_codes
        coarse = codec_codes(self.codec, wave, start = 0, stop = t.num_coarse_quantizers, groups = t.rq_groups)
        with self.sampling_wrapper() as wrapper:
            generated = _as_wave(wrapper.generate(coarse_token_ids = coarse, reconstruct_wave = True))
        rate = _rate(self.codec)
        return [Sample('original', wave[0], rate)] + ([Sample('fine_generated', generated, rate)] if exists(generated) else [])
