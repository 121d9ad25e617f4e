"""Semantic, coarse and fine transformer trainers: each builds its wrapper and dataset; the loop is shared."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch
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


class TransformerTrainer(Trainer):
    """Shared part of the three stage trainers: the wrapper runs forward (DDP wraps it; the frozen tokenizers
    inside are ignored by DDP), the transformer is optimized, saved and (optionally) averaged.

    Args (besides :class:`~audiolm_pytorch.trainers.base.Trainer`'s):
        data_max_length / data_max_length_seconds: random crop length of training clips (an int counts samples
            at the highest rate the stage reads).
        sample_max_time_steps: length (in codec frames) of the short generation written with the results.
    """


    def __init__(self, transformer: nn.Module, wrapper: nn.Module, *, data_max_length: int | None = None,
                 data_max_length_seconds: float | None = None, sample_max_time_steps: int = 64, lr: float = 3e-4,
                 grad_accum_every: int = 1, **kwargs):
        if exists(data_max_length) and exists(data_max_length_seconds):
            raise ValueError('pass data_max_length (samples) or data_max_length_seconds, not both')
        if exists(data_max_length_seconds):
            data_max_length = int(data_max_length_seconds * max(self.data_sample_rates(wrapper)))
        self.transformer, self.train_wrapper = transformer, wrapper
        self.data_max_length, self.sample_max_time_steps = data_max_length, sample_max_time_steps
        super().__init__(transformer, train_module = wrapper, lr = lr, grad_accum_every = grad_accum_every, **kwargs)

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
        if not exists(self.data_max_length) and self.batch_size > 1:
            logger.warning('data_max_length is not set: whole files of different lengths are zero-padded to the longest '
                           'in each batch, and the stage trains on that padding as silence; set data_max_length or '
                           'data_max_length_seconds (random crops) to avoid it')
        if len(rates) == 1:
            rates, multiples = rates[0], multiples[0]
        return SoundDataset(folder, target_sample_hz = rates, max_length = self.data_max_length,
                            seq_len_multiple_of = multiples)

    def phases(self) -> list[Phase]:
        return [Phase('loss', [p for p in self.transformer.parameters() if p.requires_grad], self.max_grad_norm)]

    def compute_loss(self, module: nn.Module, batch: Batch):
        return module(**self.wrapper_inputs(batch), text = batch.texts, return_loss = True), {}

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
                 results_folder: str | Path = './results', accelerate_kwargs: dict | None = None, **kwargs):
        from audiolm_pytorch.lm.semantic import SemanticTransformerWrapper
        self.wav2vec = wav2vec
        wrapper = SemanticTransformerWrapper(transformer = transformer, wav2vec = wav2vec, audio_conditioner = audio_conditioner)
        super().__init__(transformer, wrapper, data_max_length = data_max_length,
                         data_max_length_seconds = data_max_length_seconds, **trainer_kwargs(locals()), **kwargs)

    def data_sample_rates(self, wrapper):
        if not exists(wrapper.wav2vec):
            raise ValueError('training on audio needs wav2vec= (a semantic tokenizer)')
        return (_rate(wrapper.wav2vec),)

    def data_multiples(self):
        return (self.wav2vec.seq_len_multiple_of,)

    def wrapper_inputs(self, batch: Batch) -> dict:
        return dict(raw_wave = batch.waves[0])


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
                 soundstream = None, **kwargs):
        from audiolm_pytorch.lm.coarse import CoarseTransformerWrapper
        codec = codec if exists(codec) else soundstream
        self.codec, self.wav2vec = codec, wav2vec
        wrapper = CoarseTransformerWrapper(transformer = transformer, codec = codec, wav2vec = wav2vec,
                                           audio_conditioner = audio_conditioner)
        super().__init__(transformer, wrapper, data_max_length = data_max_length,
                         data_max_length_seconds = data_max_length_seconds, **trainer_kwargs(locals()), **kwargs)

    def data_sample_rates(self, wrapper):
        if not (exists(wrapper.wav2vec) and exists(wrapper.codec)):
            raise ValueError('training on audio needs both wav2vec= (semantic tokenizer) and codec=')
        return (_rate(wrapper.wav2vec), _rate(wrapper.codec))

    def data_multiples(self):
        return (self.wav2vec.seq_len_multiple_of, self.codec.seq_len_multiple_of)

    def wrapper_inputs(self, batch: Batch) -> dict:
        waves = batch.waves
        return dict(raw_wave = waves[0], raw_wave_for_codec = waves[1] if len(waves) > 1 else None)

    @torch.no_grad()
    def make_samples(self, batch: Batch) -> list[Sample]:
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
                 soundstream = None, **kwargs):
        from audiolm_pytorch.lm.fine import FineTransformerWrapper
        codec = codec if exists(codec) else soundstream
        self.codec = codec
        wrapper = FineTransformerWrapper(transformer = transformer, codec = codec, audio_conditioner = audio_conditioner)
        super().__init__(transformer, wrapper, data_max_length = data_max_length,
                         data_max_length_seconds = data_max_length_seconds, **trainer_kwargs(locals()), **kwargs)

    def data_sample_rates(self, wrapper):
        if not exists(wrapper.codec):
            raise ValueError('training on audio needs codec= (e.g. a SoundStream)')
        return (_rate(wrapper.codec),)

    def data_multiples(self):
        return (self.codec.seq_len_multiple_of,)

    def wrapper_inputs(self, batch: Batch) -> dict:
        return dict(raw_wave = batch.waves[0])

    @torch.no_grad()
    def make_samples(self, batch: Batch) -> list[Sample]:
        if not exists(self.codec):
            return []
        wave = batch.waves[0][:1, :self.sample_max_time_steps * self.codec.seq_len_multiple_of]
        from audiolm_pytorch.lm.coarse import codec_codes
        t = self.transformer   # codes are group-major (g q): keep the coarse levels of EVERY group
        coarse = codec_codes(self.codec, wave, start = 0, stop = t.num_coarse_quantizers, groups = t.rq_groups)
        with self.sampling_wrapper() as wrapper:
            generated = _as_wave(wrapper.generate(coarse_token_ids = coarse, reconstruct_wave = True))
        rate = _rate(self.codec)
        return [Sample('original', wave[0], rate)] + ([Sample('fine_generated', generated, rate)] if exists(generated) else [])
