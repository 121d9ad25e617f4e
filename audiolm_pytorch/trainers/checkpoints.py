"""Trainer checkpoints: the full training state (optimizers, schedulers, EMA, step, data position, every process's
RNG states) written atomically beside the model's config and weights, and restored so that a resumed run gives
the losses of an uninterrupted one. A mixin of :class:`~audiolm_pytorch.trainers.base.Trainer`."""

from __future__ import annotations

import logging
from pathlib import Path

from audiolm_pytorch.checkpoint import atomic_save, read_checkpoint
from audiolm_pytorch.trainers.rng import rng_state as _rng_state, set_rng_state as _set_rng_state
from audiolm_pytorch.utils import exists

__all__ = ['TrainerCheckpoints']

logger = logging.getLogger('audiolm_pytorch.trainers.base')   # one logger for the training loop and its parts


class TrainerCheckpoints:
    """``state_dict`` / ``save`` / ``load`` of ``Trainer``."""

    def state_dict(self) -> dict:
        from accelerate.utils import gather_object
        rng = gather_object([_rng_state()]) if self.accelerator.num_processes > 1 else [_rng_state()]
        return dict(
            step = self.steps,
            optimizers = {phase.name: phase.optimizer.state_dict() for phase in self._phases},
            schedulers = {phase.name: phase.scheduler.state_dict() for phase in self._phases if exists(phase.scheduler)},
            ema_step = self.ema.step if exists(self.ema) else None,
            data_position = [self._train_position, self._valid_position],
            nonfinite = [self.nonfinite_steps, self._consecutive_nonfinite],
            loss_history = self.loss_history,
            rng = rng,
            num_processes = self.accelerator.num_processes,
            grad_scaler = self.accelerator.scaler.state_dict() if exists(self.accelerator.scaler) else None,
            extra = self.extra_state(),
        )

    def save(self, path: str | Path) -> Path:
        """Atomically write config + weights (+ EMA) + full trainer state (``step`` = the next step to run)."""
        path = Path(path)
        state = self.state_dict()  # collective (RNG gathering): every process takes part
        if self.is_main:
            ema = self.ema.ema_model.state_dict() if exists(self.ema) else None
            atomic_save(self.model.checkpoint_dict(ema_state_dict = ema, trainer = state), path)
        self.accelerator.wait_for_everyone()
        return path

    def load(self, path: str | Path, *, restore_rng: bool = True, restore_optimizer: bool = True) -> dict:
        """Restore weights, EMA, optimizers, schedulers, step, data position and RNG states from ``path``
        (``restore_optimizer=False``: optimizer and scheduler states start fresh)."""
        pkg = read_checkpoint(path)
        self.model.load_state_dict(pkg['model'])
        state = pkg.get('trainer')
        if exists(self.ema):
            if exists(pkg.get('ema_model')):
                self.ema.ema_model.load_state_dict(pkg['ema_model'])
            else:
                self.ema.ema_model.load_state_dict(self.model.state_dict())
        if not exists(state):
            logger.warning('%s holds weights only: optimizer, step and RNG states start fresh', path)
            return pkg
        for phase in self._phases if restore_optimizer else ():
            if phase.name in state['optimizers']:
                phase.optimizer.load_state_dict(state['optimizers'][phase.name])
            if exists(phase.scheduler) and phase.name in state.get('schedulers', {}):
                phase.scheduler.load_state_dict(state['schedulers'][phase.name])
        if exists(self.ema) and exists(state.get('ema_step')):
            self.ema.step = state['ema_step']
        self.steps = state['step']
        self._train_position, self._valid_position = state['data_position']
        self._train_iter = self._valid_iter = None
        if exists(self._train_dl) and self._train_position:
            logger.warning('resuming with user-provided dataloaders restarts their iteration: the data order after '
                           'resume differs from an uninterrupted run (pass folder= or dataset= for exact resume)')
        self.nonfinite_steps, self._consecutive_nonfinite = state['nonfinite']
        if exists(self.accelerator.scaler) and exists(state.get('grad_scaler')):
            self.accelerator.scaler.load_state_dict(state['grad_scaler'])  # fp16 loss scale: resume without re-warming
        self.loss_history = {k: [list(p) for p in v] for k, v in state.get('loss_history', {}).items()}
        self.load_extra_state(state.get('extra', {}))
        if restore_rng:
            rng = state['rng']
            rank = self.accelerator.process_index
            if len(rng) != self.accelerator.num_processes:
                logger.warning('%s was written by %d process(es), resuming with %d: RNG streams are not restored exactly',
                               path, len(rng), self.accelerator.num_processes)
            _set_rng_state(rng[rank] if rank < len(rng) else rng[0])
        return pkg
