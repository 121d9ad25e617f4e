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
plots (``artifacts.py``, with :class:`Sample`).

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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from audiolm_pytorch.checkpoint import atomic_save, read_checkpoint
from audiolm_pytorch.trainers.artifacts import Sample, plot_results, prepare_results_folder, write_samples
from audiolm_pytorch.trainers.data_stream import (
    Batch, StreamBatchSampler, cycle, route_batch, split_train_valid, stream_batches,
)
from audiolm_pytorch.trainers.ema import EMA
from audiolm_pytorch.trainers.rng import preserved_rng, rng_state as _rng_state, set_rng_state as _set_rng_state
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


class Trainer:
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

    # ---------------------------------------------------------------- construction helpers

    def _make_accelerator(self, kwargs: dict, results_folder):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, is_tensorboard_available, is_wandb_available

        if self.use_wandb_tracking and 'log_with' not in kwargs and not is_wandb_available():
            raise ImportError("use_wandb_tracking=True needs wandb: pip install 'audiolm-pytorch[wandb]'")
        if 'log_with' not in kwargs:
            kwargs['log_with'] = 'wandb' if self.use_wandb_tracking else ('tensorboard' if is_tensorboard_available() else None)
        kwargs.setdefault('project_dir', str(results_folder))
        # explicit, as Accelerate itself resolves it: otherwise a fresh Accelerator silently inherits the precision
        # of an earlier trainer in this process (its state is global)
        kwargs.setdefault('mixed_precision', os.environ.get('ACCELERATE_MIXED_PRECISION', 'no'))
        handlers = list(kwargs.get('kwargs_handlers', []))
        if self.ddp_find_unused_parameters and not any(isinstance(h, DistributedDataParallelKwargs) for h in handlers):
            handlers.append(DistributedDataParallelKwargs(find_unused_parameters = True))
        kwargs['kwargs_handlers'] = handlers
        try:
            return Accelerator(**kwargs)
        except ValueError as error:
            if 'already been initialized' not in str(error):
                raise
            from accelerate.state import AcceleratorState, PartialState
            if PartialState().num_processes > 1:
                raise ValueError(
                    'in a distributed run every trainer must use the same mixed_precision / cpu settings '
                    f'({error}); pass the same accelerate_kwargs, or accelerator=other_trainer.accelerator') from error
            # One process (a notebook with several trainers): Accelerate keeps one global state, so start a fresh
            # one. Earlier trainers keep working: their model forward was wrapped at prepare time and this class
            # autocasts with its own recorded precision (fp16 next to another precision is not supported).
            AcceleratorState._reset_state()
            return Accelerator(**kwargs)

    def _make_scheduler(self, optimizer, warmup_steps, scheduler, scheduler_kwargs):
        from torch.optim import lr_scheduler
        after = scheduler(optimizer, **scheduler_kwargs) if exists(scheduler) else None
        if warmup_steps <= 0:
            return after
        start = self.warmup_start_lr
        if exists(start):   # from start to each group's lr, linearly (the reference SoundStormTrainer's warmup)
            factors = [lambda step, base = group['lr']: (start + (base - start) * min(1., step / warmup_steps)) / base
                       for group in optimizer.param_groups]
            warmup = lr_scheduler.LambdaLR(optimizer, factors)
        else:
            warmup = lr_scheduler.LambdaLR(optimizer, lambda step: min(1., (step + 1) / warmup_steps))
        if after is None:
            return warmup
        return lr_scheduler.SequentialLR(optimizer, [warmup, after], milestones = [warmup_steps])

    def _ignore_unoptimized_params_in_ddp(self):
        if self.accelerator.num_processes == 1:
            return
        optimized = {id(p) for phase in self._phases for p in phase.params}
        ignored = [name for name, p in self.train_module.named_parameters() if id(p) not in optimized]
        if ignored:
            from torch.nn.parallel import DistributedDataParallel
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.train_module, ignored)

    def _setup_data(self, folder, dataset, train_dataloader, val_dataloader, valid_dataset = None):
        given = [name for name, value in dict(folder = folder, dataset = dataset, train_dataloader = train_dataloader).items() if exists(value)]
        if len(given) != 1:
            raise ValueError(f'pass exactly one of folder=, dataset= or train_dataloader= (got {given or "none"})')
        self._train_dl = self._valid_dl = None
        self.train_ds = self.valid_ds = None
        if exists(train_dataloader) and exists(valid_dataset):
            raise ValueError('with train_dataloader= pass the validation data as val_dataloader=, not valid_dataset=')
        if exists(train_dataloader):
            self._train_dl = self.accelerator.prepare(train_dataloader)
            self._valid_dl = self.accelerator.prepare(val_dataloader) if exists(val_dataloader) else self._train_dl
            self._train_position = self._valid_position = 0
            self._train_iter = self._valid_iter = None
            return

        ds = dataset if exists(dataset) else self.make_dataset(folder)
        if exists(valid_dataset):
            self.train_ds, self.valid_ds = ds, valid_dataset
        else:
            self.train_ds, self.valid_ds = split_train_valid(ds, self.valid_frac, self.random_split_seed)
        if self.train_ds is not ds:
            self.print(f'training with {len(self.train_ds)} samples, validating on {len(self.valid_ds)}')
        self._train_position = self._valid_position = 0
        self._train_iter = self._valid_iter = None

    def _stream(self, train: bool):
        """A fresh iterator over the train / validation stream, starting where the last one stopped."""
        if exists(self._train_dl):
            return cycle(self._train_dl if train else self._valid_dl)
        seed = self.random_split_seed + (0 if train else 1)
        return stream_batches(self.train_ds if train else self.valid_ds, self.batch_size,
                              rank = self.accelerator.process_index, world_size = self.accelerator.num_processes,
                              seed = seed, start = self._train_position if train else self._valid_position,
                              num_workers = self.dl_num_workers, pin_memory = self.device.type == 'cuda')

    def next_batch(self, train: bool = True) -> Batch:
        if train:
            if self._train_iter is None:
                self._train_iter = self._stream(True)
            batch = next(self._train_iter)
            self._train_position += 1
        else:
            if self._valid_iter is None:
                self._valid_iter = self._stream(False)
            batch = next(self._valid_iter)
            self._valid_position += 1
        return route_batch(batch, self.device)

    def _setup_results_folder(self, force_clear):
        if self.is_main:
            prepare_results_folder(self.results_folder, force_clear = force_clear,
                                   can_ask = self.accelerator.num_processes == 1)
        self.accelerator.wait_for_everyone()

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

    # ---------------------------------------------------------------- results: validation, samples, plots

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

    # ---------------------------------------------------------------- checkpoints

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

    # ---------------------------------------------------------------- trackers

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
