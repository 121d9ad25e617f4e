"""What a :class:`~audiolm_pytorch.trainers.base.Trainer` reports while it trains: the loss history, the periodic
validation losses, audio samples and plots (under a saved-and-restored RNG, so they never change the training
trajectory) and the wandb tracker. A mixin of ``Trainer``."""

from __future__ import annotations

import contextlib
import logging

import torch

from audiolm_pytorch.trainers.artifacts import plot_results, write_samples
from audiolm_pytorch.trainers.rng import preserved_rng
from audiolm_pytorch.utils import default, exists

__all__ = ['TrainerResults']

logger = logging.getLogger('audiolm_pytorch.trainers.base')   # one logger for the training loop and its parts


class TrainerResults:
    """``save_results`` (validation, samples, plots), the loss history and ``wandb_tracker`` of ``Trainer``."""

    def _record(self, step: int, logs: dict):
        for key, value in logs.items():
            history = self.loss_history.setdefault(key, [])
            history.append([step, float(value)])
            if len(history) > 20_000:  # keep plots and checkpoints small on very long runs
                self.loss_history[key] = history[::2]

    def save_results(self, step: int):
        """Validation loss, audio samples and plots (RNG preserved so training is unaffected). Every process
        runs the forward passes (models may hold collectives, e.g. synced codebooks); the main one writes."""
        with preserved_rng():
            self.train_module.eval()
            try:
                with torch.no_grad(), self.autocast():
                    batch = self.next_batch(train = False)
                    valid = {f'valid_{k}': v for k, v in self.validation_losses(self.train_module, batch).items()}
                    samples = self.make_samples(batch)
                    for _ in range(self.num_valid_batches - 1):   # averaged over several batches
                        more = self.validation_losses(self.train_module, self.next_batch(train = False))
                        for k, v in more.items():
                            valid[f'valid_{k}'] = valid.get(f'valid_{k}', 0.) + v
                    if self.num_valid_batches > 1:
                        valid = {k: v / self.num_valid_batches for k, v in valid.items()}
            finally:
                self.train_module.train()
        if not self.is_main:
            return
        self._record(step, valid)
        self.accelerator.log(valid, step = step)
        self.print(f'{step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in valid.items()))

        write_samples(self.results_folder, f'{self.checkpoint_name}.{step}', samples)
        if not plot_results(self.results_folder, self.checkpoint_name, step, samples, self.loss_history) and not self._warned_no_plot:
            logger.info('matplotlib is not installed: skipping plots (pip install "audiolm-pytorch[plot]")')
            self._warned_no_plot = True

    @contextlib.contextmanager
    def wandb_tracker(self, project: str, run: str | None = None, hps: dict | None = None):
        """``with trainer.wandb_tracker(project='audiolm', run='soundstream-1'): trainer.train()``"""
        if not self.use_wandb_tracking:
            raise ValueError('construct the trainer with use_wandb_tracking=True to log to wandb')
        init_kwargs = {'wandb': {'name': run}} if exists(run) else {}
        self.accelerator.init_trackers(project, config = default(hps, self.tracker_config()), init_kwargs = init_kwargs)
        try:
            yield
        finally:
            self.accelerator.end_training()
