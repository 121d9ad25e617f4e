"""SoundStream training: generator and discriminators, each with its own optimizer, on the shared loop."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from audiolm_pytorch.codecs.codebook_sync import enable_codebook_sync
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.trainers.base import Batch, Phase, Sample, Trainer, trainer_kwargs
from audiolm_pytorch.utils import beartype, exists


@reference_compat('SoundStreamTrainer')
class SoundStreamTrainer(Trainer):
    """Train a ``SoundStream`` codec (arXiv 2107.03312) with its adversarial losses.

    Each micro-batch runs one encoder / decoder pass (``soundstream(x, return_all_losses=True)``) whose generator
    loss reaches only the codec's parameters and whose discriminator (hinge) loss reaches only the
    discriminators', so a single backward serves both optimizers. The zero-centred gradient penalty on the
    discriminators is added every ``apply_grad_penalty_every`` steps (default 0: off, as SoundStream / EnCodec / DAC
    train; it was every 4 steps before issue 13).

    Args (the established ``audiolm-pytorch`` names; see :class:`~audiolm_pytorch.trainers.base.Trainer` for the
    shared ones):
        soundstream: the codec to train.
        data_max_length / data_max_length_seconds: random crop length of training clips (samples / seconds).
        lr: learning rate of both optimizers. betas: AdamW betas, default ``(0.8, 0.99)`` as EnCodec and DAC (was the
            base trainer's ``(0.9, 0.99)``). max_grad_norm / discr_max_grad_norm: clipping of each.
        warmup_steps / scheduler / scheduler_kwargs (base trainer): the codec's learning-rate schedule.
        discr_warmup_steps (default: warmup_steps) / discr_scheduler / discr_scheduler_kwargs: the
            discriminators' own schedule (no scheduler after the warmup unless discr_scheduler is given).
        use_ema, ema_beta=0.995, ema_update_after_step=500, ema_update_every=10: EMA of the codec (its weights
            are the ones ``SoundStream.load`` / ``init_and_load_from`` prefer).

    Checkpoints: ``results_folder/soundstream.{step}.pt``; samples: the online and the EMA reconstruction of a
    validation clip next to the original, under ``results_folder/samples``.
    """

    checkpoint_name = 'soundstream'

    @beartype
    def __init__(
        self, soundstream: nn.Module, *, num_train_steps: int, batch_size: int,
        data_max_length: int | None = None, data_max_length_seconds: float | None = None,
        folder: str | Path | None = None, dataset: Dataset | None = None,
        train_dataloader: DataLoader | None = None, val_dataloader: DataLoader | None = None,
        lr: float = 2e-4, grad_accum_every: int = 4, wd: float = 0., betas: tuple = (0.8, 0.99),
        max_grad_norm: float | None = 0.5,
        discr_max_grad_norm: float | None = None, save_results_every: int = 100, save_model_every: int = 1000,
        log_losses_every: int = 1, results_folder: str | Path = './results', valid_frac: float = 0.05,
        random_split_seed: int = 42, use_ema: bool = True, ema_beta: float = 0.995,
        ema_update_after_step: int = 500, ema_update_every: int = 10, apply_grad_penalty_every: int = 0,
        dl_num_workers: int = 0, accelerator = None, accelerate_kwargs: dict | None = None,
        use_wandb_tracking: bool = False, force_clear_prev_results: bool | None = None,
        discr_warmup_steps: int | None = None, discr_scheduler = None, discr_scheduler_kwargs: dict | None = None,
        **kwargs,
    ):
        if exists(data_max_length) and exists(data_max_length_seconds):
            raise ValueError('pass data_max_length (samples) or data_max_length_seconds, not both')
        if exists(data_max_length_seconds):
            data_max_length = int(data_max_length_seconds * soundstream.target_sample_hz)
        self.soundstream = soundstream
        self.data_max_length = data_max_length
        self.discr_max_grad_norm = discr_max_grad_norm
        self.apply_grad_penalty_every = apply_grad_penalty_every
        self.discr_schedule = (discr_warmup_steps, discr_scheduler, discr_scheduler_kwargs)
        super().__init__(soundstream, **trainer_kwargs(locals()), **kwargs)
        # the codec was most likely built before the process group existed: share its codebook statistics now
        enable_codebook_sync(self.soundstream)

    @torch.no_grad()
    def tokenize(self, audio):
        """Codes of ``audio`` from the EMA codec (the online one without EMA)."""
        codec = self.ema_model if exists(self.ema_model) else self.soundstream
        return codec.tokenize(audio)

    def make_dataset(self, folder) -> Dataset:
        from audiolm_pytorch.data import SoundDataset
        return SoundDataset(folder, target_sample_hz = self.soundstream.target_sample_hz,
                            max_length = self.data_max_length, seq_len_multiple_of = self.soundstream.seq_len_multiple_of)

    def phases(self) -> list[Phase]:
        phases = [Phase('generator', list(self.soundstream.non_discr_parameters()), self.max_grad_norm)]
        discriminator_parameters = list(self.soundstream.discriminator_parameters())
        if discriminator_parameters:  # a codec trained without any discriminator has no adversarial phase
            warmup, scheduler, scheduler_kwargs = self.discr_schedule
            phases.append(Phase('discriminator', discriminator_parameters, self.discr_max_grad_norm,
                                warmup_steps = warmup, lr_scheduler = scheduler, scheduler_kwargs = scheduler_kwargs,
                                own_schedule = True))
        return phases

    def compute_loss(self, module: nn.Module, batch: Batch):
        apply_grad_penalty = self.apply_grad_penalty_every > 0 and self.steps % self.apply_grad_penalty_every == 0
        losses = module(batch.waves[0], return_all_losses = True, apply_grad_penalty = apply_grad_penalty)
        logs = dict(generator = losses.generator, discriminator = losses.discriminator)
        logs.update({f'gen_{name}': value for name, value in losses.breakdown._asdict().items()})
        if 'grad_penalty' in losses.discr_breakdown:
            logs['grad_penalty'] = losses.discr_breakdown['grad_penalty']
        return losses.generator + losses.discriminator, logs

    @torch.no_grad()
    def validation_losses(self, model: nn.Module, batch: Batch) -> dict:
        loss, breakdown = model(batch.waves[0], return_loss_breakdown = True)
        return dict(loss = loss.item(), recon = breakdown.recon.item(), multi_spectral = breakdown.multi_spectral.item())

    @torch.no_grad()
    def make_samples(self, batch: Batch) -> list[Sample]:
        wave = batch.waves[0][:1]
        sample_hz = self.soundstream.target_sample_hz
        samples = [Sample('original', wave[0], sample_hz),
                   Sample('recon', self.soundstream(wave, return_recons_only = True).reshape(-1), sample_hz)]
        if exists(self.ema_model):
            samples.append(Sample('recon_ema', self.ema_model(wave, return_recons_only = True).reshape(-1), sample_hz))
        return samples
