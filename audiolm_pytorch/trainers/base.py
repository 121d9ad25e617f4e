"""One training loop on 🤗 Accelerate, shared by every trainer (SoundStream, semantic / coarse / fine, SoundStorm, MuLaN).

A stage subclasses :class:`Trainer` and implements only its step:

- ``checkpoint_name``: file stem of checkpoints, ``{results_folder}/{checkpoint_name}.{step}.pt``;
- ``make_dataset(folder)``: the dataset a ``folder=`` argument means for this stage;
- ``phases()``: one :class:`Phase` per optimizer (a GAN has two), each with its parameters and clipping norm;
- ``compute_loss(module, batch)``: ``(loss, {name: float})`` for one micro-batch. There is one forward and one
  backward per micro-batch; with several phases the loss is their sum and each term must only have gradients
  w.r.t. its own phase's parameters (SoundStream's ``return_all_losses`` is built that way), which keeps DDP to
  one gradient sync per step;
- optionally ``validation_losses(model, batch)`` and ``make_samples(batch)`` for the periodic results.

The base class owns the rest: data (folder / dataset / ready dataloaders, a seeded validation split and a
resumable, deterministic, process-sharded batch stream), gradient accumulation without gradient sync on inner
micro-batches, mixed precision, clipping, warmup + optional scheduler, EMA, skipping of non-finite steps,
trackers, a progress bar, periodic validation / samples / plots and atomic checkpoints that resume exactly.
The pieces it is built from live beside it and are re-exported here: :class:`~.ema.EMA` (``ema.py``), RNG
snapshots (``rng.py``), the batch stream and :class:`Batch` (``data_stream.py``), the results folder, samples and
plots (``artifacts.py``, with :class:`Sample`). ``Trainer``'s own methods are in four files: the loop (here),
accelerator / scheduler / data setup (``setup.py``), checkpoints and resume (``checkpoints.py``) and the periodic
validation, samples, plots and trackers (``results.py``), the last three as mixins.

Step numbering starts at 0: ``num_train_steps=9, save_model_every=4`` writes checkpoints after steps 0, 4 and 8;
``train()`` also writes one after the last step when that is not a multiple (``num_train_steps=10``: 0, 4, 8, 9).
A checkpoint written after step ``s`` stores ``step = s + 1`` (the next step to run), the optimizer / scheduler /
EMA states, the position in the data stream and every process's RNG states (torch, CUDA, numpy, python), so
``trainer.load(path)`` followed by training gives the same losses as a run that was never interrupted (on CPU,
with ``dl_num_workers=0``; worker processes re-seed deterministically but restart their random crops).
Validation and sampling run under a saved-and-restored RNG, so they never change the training trajectory.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from audiolm_pytorch.trainers.artifacts import Sample
from audiolm_pytorch.trainers.checkpoints import TrainerCheckpoints
from audiolm_pytorch.trainers.data_stream import (
    Batch,
    StreamBatchSampler,
    route_batch,
)
from audiolm_pytorch.trainers.ema import EMA
from audiolm_pytorch.trainers.results import TrainerResults
from audiolm_pytorch.trainers.rng import preserved_rng
from audiolm_pytorch.trainers.setup import TrainerSetup
from audiolm_pytorch.utils import default, exists

__all__ = ['Batch', 'EMA', 'NonFiniteLossError', 'Phase', 'Sample', 'StreamBatchSampler', 'Trainer',
           'preserved_rng', 'route_batch', 'trainer_kwargs']

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------
# small pieces
# ----------------------------------------------------------------------------------------------------------


class NonFiniteLossError(RuntimeError):
    """Raised when too many consecutive steps produced a NaN / inf loss or gradient norm."""


@dataclass
class Phase:
    """One optimizer and its parameters (a GAN has a generator and a discriminator phase)."""
    name: str
    params: list
    max_grad_norm: float | None = None
    lr: float | None = None                      # defaults to the trainer's lr
    optimizer: Any = None                        # filled in by the trainer
    scheduler: Any = None
    # learning-rate schedule of this phase; ``None`` = the trainer's warmup_steps / scheduler / scheduler_kwargs
    warmup_steps: int | None = None
    lr_scheduler: Callable | None = None
    scheduler_kwargs: dict | None = None
    own_schedule: bool = False                   # True: use the three fields above even when None (no scheduler)


def _inner_optimizer(optimizer):
    """The torch optimizer inside an Accelerate ``AcceleratedOptimizer``."""
    while hasattr(optimizer, 'optimizer') and isinstance(optimizer.optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def trainer_kwargs(scope: dict) -> dict:
    """The base :class:`Trainer` keyword arguments found in ``scope`` (a subclass ``__init__``'s ``locals()``).

    Stage trainers name the shared arguments in their own signatures (documented defaults, type checks, YAML
    configs read them), then pass them on unchanged with ``super().__init__(model, **trainer_kwargs(locals()),
    **kwargs)``. Call it before assigning any local variable that shares a name with a :class:`Trainer` argument.
    """
    return {name: scope[name] for name in _trainer_kwarg_names() if name in scope}


def _trainer_kwarg_names() -> tuple[str, ...]:
    import inspect
    return tuple(name for name, param in inspect.signature(Trainer.__init__).parameters.items()
                 if param.kind is inspect.Parameter.KEYWORD_ONLY and name != 'train_module')


# ----------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------


class Trainer(TrainerSetup, TrainerCheckpoints, TrainerResults):
    """Base class of every trainer. See the module docstring for what a subclass implements.

    Args:
        model: the ``Checkpointable`` module whose weights are trained and saved (a transformer, a SoundStream).
        train_module: the module that runs forward (a wrapper holding ``model``); Accelerate / DDP wraps exactly
            this one. Parameters of it that no phase optimizes (a frozen codec) are ignored by DDP.
        folder / dataset / train_dataloader (+ val_dataloader): where batches come from (one of them).
        valid_frac, random_split_seed: size and seed of the validation split of ``folder`` / ``dataset``
            (``valid_frac=0`` validates on the training data). The seed also orders the batch stream.
        valid_dataset: a separate validation dataset (with ``folder`` / ``dataset``; no split is taken then).
        num_valid_batches: batches averaged for each periodic validation loss.
        grad_accum_every: micro-batches per optimizer step (gradients synced across processes on the last only).
        warmup_steps: linear learning-rate warmup; ``scheduler`` (a class taking the optimizer first, e.g.
            ``CosineAnnealingLR``) with ``scheduler_kwargs`` runs after the warmup.
        use_ema, ema_beta, ema_update_after_step, ema_update_every: see :class:`EMA`.
        force_clear_prev_results: ``True`` clears ``results_folder``, ``False`` keeps it; ``None`` asks only when
            a terminal is attached to stdin and stdout (single process), and otherwise keeps it (logged).
        accelerator / accelerate_kwargs: an ``Accelerator`` to use, or keyword arguments for a fresh one
            (e.g. ``dict(mixed_precision='bf16')``). Trackers: tensorboard when installed, wandb with
            ``use_wandb_tracking=True`` inside ``with trainer.wandb_tracker(project, run): trainer.train()``.
        max_consecutive_nonfinite: NaN / inf steps are skipped with a warning and counted
            (``trainer.nonfinite_steps``); this many in a row raise :class:`NonFiniteLossError`.
    """

    checkpoint_name = 'model'
    ddp_find_unused_parameters = False
    warmup_start_lr: float | None = None   # learning rate at warmup step 0 (None: lr / warmup_steps)

    def __init__(
        self, model: nn.Module, *, train_module: nn.Module | None = None, num_train_steps: int, batch_size: int,
        folder: str | Path | None = None, dataset: Dataset | None = None,
        train_dataloader: DataLoader | None = None, val_dataloader: DataLoader | None = None,
        valid_frac: float = 0.05, random_split_seed: int = 42, grad_accum_every: int = 1,
        lr: float = 3e-4, wd: float = 0., betas: tuple = (0.9, 0.99), max_grad_norm: float | None = 0.5,
        warmup_steps: int = 0, scheduler: Callable | None = None, scheduler_kwargs: dict | None = None,
        use_ema: bool = False, ema_beta: float = 0.995, ema_update_after_step: int = 500, ema_update_every: int = 10,
        save_results_every: int = 100, save_model_every: int = 1000, log_losses_every: int = 1,
        results_folder: str | Path = './results', force_clear_prev_results: bool | None = None,
        dl_num_workers: int = 0, accelerator=None, accelerate_kwargs: dict | None = None,
        use_wandb_tracking: bool = False, max_consecutive_nonfinite: int = 8, progress_bar: bool = True,
        valid_dataset: Dataset | None = None, num_valid_batches: int = 1,
    ):
        for name, value in dict(num_train_steps = num_train_steps, batch_size = batch_size, grad_accum_every = grad_accum_every,
                                save_results_every = save_results_every, save_model_every = save_model_every,
                                log_losses_every = log_losses_every, num_valid_batches = num_valid_batches).items():
            if value < 1:
                raise ValueError(f'{name} must be a positive integer, got {value}')
        if not 0. <= valid_frac < 1.:
            raise ValueError(f'valid_frac must be in [0, 1), got {valid_frac}')

        self.model = model
        self.train_module = train_module if exists(train_module) else model
        self.num_train_steps, self.batch_size, self.grad_accum_every = num_train_steps, batch_size, grad_accum_every
        self.lr, self.wd, self.betas, self.max_grad_norm = lr, wd, tuple(betas), max_grad_norm
        self.save_results_every, self.save_model_every, self.log_losses_every = save_results_every, save_model_every, log_losses_every
        self.use_wandb_tracking, self.max_consecutive_nonfinite, self.progress_bar = use_wandb_tracking, max_consecutive_nonfinite, progress_bar
        self.valid_frac, self.random_split_seed, self.dl_num_workers = valid_frac, random_split_seed, dl_num_workers
        self.num_valid_batches = num_valid_batches
        self.warmup_steps = warmup_steps

        self.accelerator = accelerator if exists(accelerator) else self._make_accelerator(dict(accelerate_kwargs or {}), results_folder)
        self.device = self.accelerator.device
        self.mixed_precision = str(self.accelerator.mixed_precision)  # recorded: Accelerate's state is global

        if getattr(self.accelerator, 'gradient_accumulation_steps', 1) > 1:
            raise ValueError(
                f'the accelerator has gradient_accumulation_steps={self.accelerator.gradient_accumulation_steps}: it '
                'would only divide every loss by that number here; pass grad_accum_every= to the trainer instead')

        self.steps = 0
        self.nonfinite_steps = 0
        self._consecutive_nonfinite = 0
        self._scale_overflow = False
        self.loss_history: dict[str, list] = {}
        self._warned_no_plot = False

        # optimizers and schedulers, one per phase
        self._phases = self.phases()
        for phase in self._phases:
            phase.optimizer = self.make_optimizer(phase.params, lr = default(phase.lr, lr), weight_decay = wd)
            if phase.own_schedule:
                phase.scheduler = self._make_scheduler(phase.optimizer, default(phase.warmup_steps, warmup_steps),
                                                       phase.lr_scheduler, phase.scheduler_kwargs or {})
            else:
                phase.scheduler = self._make_scheduler(phase.optimizer, warmup_steps, scheduler, scheduler_kwargs or {})

        self.ema = EMA(model, beta = ema_beta, update_after_step = ema_update_after_step, update_every = ema_update_every) if use_ema else None

        self._ignore_unoptimized_params_in_ddp()
        self.wrapped = self.accelerator.prepare(self.train_module)
        for phase in self._phases:
            phase.optimizer = self.accelerator.prepare(phase.optimizer)
        if exists(self.ema):
            self.ema.ema_model.to(self.device)

        self._setup_data(folder, dataset, train_dataloader, val_dataloader, valid_dataset)
        self.results_folder = Path(results_folder)
        self._setup_results_folder(force_clear_prev_results)

        if self.accelerator.log_with and not use_wandb_tracking and not self.accelerator.trackers:
            self.accelerator.init_trackers(self.checkpoint_name, config = self.tracker_config())

    # ---------------------------------------------------------------- hooks for subclasses

    def phases(self) -> list[Phase]:
        return [Phase('loss', [p for p in self.model.parameters() if p.requires_grad], self.max_grad_norm)]

    def make_optimizer(self, params, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """The optimizer of one phase (AdamW with the trainer's betas)."""
        return torch.optim.AdamW(params, lr = lr, betas = self.betas, weight_decay = weight_decay)

    def make_dataset(self, folder) -> Dataset:
        raise NotImplementedError(f'{type(self).__name__} does not build datasets from a folder; pass dataset=')

    def compute_loss(self, module: nn.Module, batch: Batch) -> tuple[Tensor, dict]:
        """Loss of one micro-batch (summed over phases: each phase's loss must only reach its own parameters)
        and floats to log. ``module`` is the prepared (possibly DDP-wrapped) ``train_module``."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_losses(self, model: nn.Module, batch: Batch) -> dict:
        loss, logs = self.compute_loss(model, batch)
        return {'loss': loss.item(), **logs}

    @torch.no_grad()
    def make_samples(self, batch: Batch) -> list[Sample]:
        return []

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict):
        pass

    def tracker_config(self) -> dict:
        return dict(num_train_steps = self.num_train_steps, batch_size = self.batch_size,
                    grad_accum_every = self.grad_accum_every, lr = self.lr)

    # ---------------------------------------------------------------- properties

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def unwrapped_model(self) -> nn.Module:
        return self.model

    @property
    def ema_model(self) -> nn.Module | None:
        return self.ema.ema_model if exists(self.ema) else None

    def cuda(self, device = None) -> 'Trainer':
        """``Trainer(...).cuda()`` as the established library's READMEs write it: the accelerator has already
        placed the models on its device, so this only checks that the device is a GPU and returns the trainer."""
        if self.device.type != 'cuda':
            raise ValueError(f'.cuda(): this trainer runs on {self.device} (Accelerate picks the device: no CUDA '
                             'device is visible, or cpu=True was asked for); drop the .cuda() call')
        return self

    def autocast(self):
        """Autocast for this trainer's precision (not Accelerate's global one, which a later trainer may change)."""
        dtype = dict(bf16 = torch.bfloat16, fp16 = torch.float16).get(self.mixed_precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type = self.device.type, dtype = dtype)

    def print(self, message: str):
        self.accelerator.print(message)

    # ---------------------------------------------------------------- the step

    def _grad_scaler(self):
        """The fp16 loss scaler this loop steps through itself (``None`` without one; XLA keeps Accelerate's path,
        whose optimizer step also all-reduces the gradients)."""
        from accelerate.utils import DistributedType
        if self.accelerator.distributed_type == DistributedType.XLA:
            return None
        return self.accelerator.scaler

    def _clip(self, phase: Phase) -> Tensor:
        from accelerate.utils import DistributedType
        max_norm = default(phase.max_grad_norm, float('inf'))
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.XLA):
            norm = self.accelerator.clip_grad_norm_(phase.params, max_norm)
            return torch.as_tensor(norm if exists(norm) else 0.)
        scaler = self._grad_scaler()
        if exists(scaler):  # fp16: clip (and check) the true gradients; the step below must not unscale them again
            scaler.unscale_(_inner_optimizer(phase.optimizer))
        return torch.nn.utils.clip_grad_norm_(phase.params, max_norm)

    def optimize(self) -> tuple[dict, bool]:
        """Accumulate ``grad_accum_every`` micro-batches (one backward each, gradients synced across processes on
        the last only), then clip and step every phase's optimizer, unless the loss or a gradient norm is not
        finite on any process (then nothing is updated). Returns ``(logs, finite)``."""
        for phase in self._phases:
            phase.optimizer.zero_grad(set_to_none = True)
        total, logs = 0., {}
        for index in range(self.grad_accum_every):
            batch = self.next_batch()
            last = index == self.grad_accum_every - 1
            sync = contextlib.nullcontext() if last else self.accelerator.no_sync(self.wrapped)
            with sync:
                with self.autocast():
                    loss, micro_logs = self.compute_loss(self.wrapped, batch)
                self.accelerator.backward(loss / self.grad_accum_every)
            total = total + loss.detach().float() / self.grad_accum_every
            for key, value in micro_logs.items():  # tensors stay on device: one host sync per step, below
                value = value.detach().float() if torch.is_tensor(value) else float(value)
                logs[key] = logs.get(key, 0.) + value / self.grad_accum_every

        norms = [self._clip(phase).to(self.device).float() for phase in self._phases]
        # one small all-reduce: every process must agree on skipping, or the replicas would drift apart
        checked = self.accelerator.reduce(torch.stack([torch.as_tensor(total, device = self.device).float(), *norms]),
                                          reduction = 'mean').tolist()
        finite = all(math.isfinite(value) for value in checked)
        scaler = self._grad_scaler()
        if finite:
            for phase in self._phases:
                if exists(scaler):
                    # one loss scale for all phases: step each optimizer on its (already unscaled) gradients, then
                    # update the scale once below. AcceleratedOptimizer.step would update it after every optimizer,
                    # which resets the record of the unscaling and divides the next phase's gradients by the scale
                    # a second time (a discriminator silently trained with gradients ~65536x too small)
                    scaler.step(_inner_optimizer(phase.optimizer))
                else:
                    phase.optimizer.step()
                if exists(phase.scheduler):
                    phase.scheduler.step()
        self._scale_overflow = False
        if exists(scaler):
            # also after a skipped step: an fp16 overflow must lower the scale, or every later step overflows too
            scale = float(scaler.get_scale())
            scaler.update()
            self._scale_overflow = not finite and math.isfinite(checked[0]) and scale > 1.
        for phase in self._phases:
            phase.optimizer.zero_grad(set_to_none = True)
        logs = {'loss': checked[0], **dict(zip(logs, torch.stack([torch.as_tensor(v, device = self.device).float()
                                                                   for v in logs.values()]).tolist() if logs else []))}
        for phase, norm in zip(self._phases, checked[1:]):
            logs['grad_norm' if len(self._phases) == 1 else f'{phase.name}_grad_norm'] = norm
        return logs, finite

    def train_step(self) -> dict:
        """One optimization step; validation / samples / checkpoints when due. Returns the logged losses."""
        step = self.steps
        self.wrapped.train()
        logs, all_finite = self.optimize()

        if all_finite:
            self._consecutive_nonfinite = 0
        elif self._scale_overflow:
            # fp16 gradient overflow with a finite loss: the loss scale was just lowered (normal early in training)
            self.nonfinite_steps += 1
            logger.info('step %d: fp16 gradient overflow, skipped the update and lowered the loss scale to %g',
                        step, float(self.accelerator.scaler.get_scale()))
        else:
            self.nonfinite_steps += 1
            self._consecutive_nonfinite += 1
            logger.warning('step %d: non-finite loss or gradient (%s); skipped the update (%d skipped so far)',
                           step, {k: v for k, v in logs.items() if isinstance(v, float)}, self.nonfinite_steps)
            if self._consecutive_nonfinite >= self.max_consecutive_nonfinite:
                raise NonFiniteLossError(
                    f'{self._consecutive_nonfinite} consecutive steps had a NaN / inf loss or gradient (last at step '
                    f'{step}); stopping before the weights are corrupted. Lower the learning rate, check the data for '
                    'silent or broken files, or use mixed_precision="bf16" instead of "fp16".')

        if exists(self.ema) and all_finite:   # a skipped step changed no weight: nothing to average in
            self.ema.update(self.model)

        if step % self.log_losses_every == 0:
            self._record(step, logs)
            self.accelerator.log(logs, step = step)

        self.steps += 1  # checkpoints written below resume at the next step

        if step % self.save_results_every == 0:
            self.save_results(step)

        if step % self.save_model_every == 0:
            self.save(self.results_folder / f'{self.checkpoint_name}.{step}.pt')

        return logs

    def train(self, log_fn: Callable[[dict], Any] | None = None):
        from tqdm.auto import tqdm
        bar = tqdm(total = self.num_train_steps, initial = self.steps, desc = self.checkpoint_name,
                   disable = not (self.is_main and self.progress_bar), dynamic_ncols = True)
        trained = False
        while self.steps < self.num_train_steps:
            logs = self.train_step()
            trained = True
            bar.update(1)
            bar.set_postfix({k: f'{v:.3g}' for k, v in logs.items() if not k.endswith('grad_norm')}, refresh = False)
            if exists(log_fn):
                log_fn(logs)
        bar.close()
        last = self.steps - 1
        if trained and last % self.save_model_every != 0:
            # the weights of the final steps would otherwise be lost (e.g. steps 9001-9999 of 10000 with
            # save_model_every=1000): write the last step's checkpoint too
            self.save(self.results_folder / f'{self.checkpoint_name}.{last}.pt')
        self.print('training complete')
