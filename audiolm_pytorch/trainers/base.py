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

Step numbering starts at 0: ``num_train_steps=9, save_model_every=4`` writes checkpoints after steps 0, 4 and 8.
A checkpoint written after step ``s`` stores ``step = s + 1`` (the next step to run), the optimizer / scheduler /
EMA states, the position in the data stream and every process's RNG states (torch, CUDA, numpy, python), so
``trainer.load(path)`` followed by training gives the same losses as a run that was never interrupted (on CPU,
with ``dl_num_workers=0``; worker processes re-seed deterministically but restart their random crops).
Validation and sampling run under a saved-and-restored RNG, so they never change the training trajectory.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, random_split

from audiolm_pytorch.checkpoint import atomic_save, read_checkpoint
from audiolm_pytorch.utils import default, exists

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


class Batch(NamedTuple):
    """A collated batch routed by type: tensors in dataset order, strings as texts."""
    waves: tuple          # each (b, n), on the trainer's device
    texts: list | None    # list[str] of length b, or None


class Sample(NamedTuple):
    name: str
    wave: Tensor          # (n,) or (1, n)
    sample_hz: int


class EMA:
    """Exponential moving average of a model's weights (Polyak averaging).

    Defaults follow the established SoundStream trainer: for the first ``update_after_step`` updates the EMA
    copy simply tracks the online weights; afterwards, every ``update_every`` updates,
    ``ema = beta * ema + (1 - beta) * online`` for floating-point parameters and buffers (others are copied).
    The averaged copy has exactly the online model's state-dict keys.
    """

    def __init__(self, model: nn.Module, *, beta: float = 0.995, update_after_step: int = 500, update_every: int = 10):
        if not 0. <= beta < 1.:
            raise ValueError(f'ema_beta must be in [0, 1), got {beta}')
        self.beta, self.update_after_step, self.update_every = beta, update_after_step, max(1, update_every)
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0

    @torch.no_grad()
    def update(self, model: nn.Module):
        self.step += 1
        online = model.state_dict()
        target = self.ema_model.state_dict()
        copy_only = self.step <= self.update_after_step
        if not copy_only and self.step % self.update_every != 0:
            return
        for key, value in online.items():
            ema_value = target[key]
            if copy_only or not ema_value.is_floating_point():
                ema_value.copy_(value)
            else:
                ema_value.lerp_(value.to(ema_value.dtype), 1. - self.beta)


def _rng_state() -> dict:
    """Every RNG this loop touches, as data that ``torch.load(weights_only=True)`` reads back."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = dict(
        torch = torch.get_rng_state(),
        numpy = [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        python = [py_state[0], list(py_state[1]), py_state[2]],
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict):
    torch.set_rng_state(state['torch'])
    name, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((name, np.asarray(keys, dtype = np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@contextlib.contextmanager
def preserved_rng():
    """Run a block (validation, sampling) without changing any RNG the training trajectory depends on."""
    state = _rng_state()
    try:
        yield
    finally:
        _set_rng_state(state)


def route_batch(batch, device) -> Batch:
    """Route the fields of a collated batch by type: tensors are audio (in dataset order, nested tuples
    flattened), strings are text. Datasets may yield audio alone or ``(text, audio)`` in either order."""
    waves, texts = [], None

    def visit(field):
        nonlocal texts
        if isinstance(field, Tensor):
            waves.append(field.to(device, non_blocking = True))
        elif _is_texts(field):
            texts = [field] if isinstance(field, str) else list(field)
        elif isinstance(field, (tuple, list)):
            for sub in field:
                visit(sub)
        else:
            raise TypeError(f'cannot route a batch field of type {type(field).__name__}: datasets must yield '
                            'audio tensors and, optionally, text strings')

    visit(batch)
    if not waves:
        raise ValueError('the batch holds no audio tensor')
    return Batch(tuple(waves), texts)


def _is_texts(value) -> bool:
    return isinstance(value, str) or (isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, str) for v in value))


class StreamBatchSampler:
    """An endless, deterministic stream of shuffled epochs, cut into global batches and sharded over processes.

    Global batch ``k`` holds stream positions ``[k·B·W, (k+1)·B·W)`` (``B`` per-process batch size, ``W``
    processes); process ``r`` takes the ``r``-th slice of ``B``. Epoch ``e`` is a permutation seeded by
    ``(seed, e)``, so ``start`` (batches already consumed) is all it takes to resume, and one process with batch
    ``2B`` sees the same global batches as two processes with batch ``B``. Small datasets simply wrap around.
    """

    def __init__(self, num_items: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, start: int = 0):
        if num_items < 1:
            raise ValueError('cannot sample batches from an empty dataset')
        self.num_items, self.batch_size, self.rank, self.world_size = num_items, batch_size, rank, world_size
        self.seed, self.shuffle, self.start = seed, shuffle, start
        self._perms: dict[int, Tensor] = {}

    def _item(self, position: int) -> int:
        epoch, index = divmod(position, self.num_items)
        if not self.shuffle:
            return index
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.num_items, generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch))}
        return int(self._perms[epoch][index])

    def __iter__(self):
        batch_index = self.start
        while True:
            offset = (batch_index * self.world_size + self.rank) * self.batch_size
            yield [self._item(offset + j) for j in range(self.batch_size)]
            batch_index += 1


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
    ):
        for name, value in dict(num_train_steps = num_train_steps, batch_size = batch_size, grad_accum_every = grad_accum_every,
                                save_results_every = save_results_every, save_model_every = save_model_every,
                                log_losses_every = log_losses_every).items():
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

        self.accelerator = accelerator if exists(accelerator) else self._make_accelerator(dict(accelerate_kwargs or {}), results_folder)
        self.device = self.accelerator.device
        self.mixed_precision = str(self.accelerator.mixed_precision)  # recorded: Accelerate's state is global

        self.steps = 0
        self.nonfinite_steps = 0
        self._consecutive_nonfinite = 0
        self.loss_history: dict[str, list] = {}
        self._warned_no_plot = False

        # optimizers and schedulers, one per phase
        self._phases = self.phases()
        for phase in self._phases:
            phase.optimizer = torch.optim.AdamW(phase.params, lr = default(phase.lr, lr), betas = self.betas, weight_decay = wd)
            phase.scheduler = self._make_scheduler(phase.optimizer, warmup_steps, scheduler, scheduler_kwargs or {})

        self.ema = EMA(model, beta = ema_beta, update_after_step = ema_update_after_step, update_every = ema_update_every) if use_ema else None

        self._ignore_unoptimized_params_in_ddp()
        self.wrapped = self.accelerator.prepare(self.train_module)
        for phase in self._phases:
            phase.optimizer = self.accelerator.prepare(phase.optimizer)
        if exists(self.ema):
            self.ema.ema_model.to(self.device)

        self._setup_data(folder, dataset, train_dataloader, val_dataloader)
        self.results_folder = Path(results_folder)
        self._setup_results_folder(force_clear_prev_results)

        if self.accelerator.log_with and not use_wandb_tracking and not self.accelerator.trackers:
            self.accelerator.init_trackers(self.checkpoint_name, config = self.tracker_config())

    # ---------------------------------------------------------------- hooks for subclasses

    def phases(self) -> list[Phase]:
        return [Phase('loss', [p for p in self.model.parameters() if p.requires_grad], self.max_grad_norm)]

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
        from accelerate.utils import DistributedDataParallelKwargs, is_tensorboard_available

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

    def _setup_data(self, folder, dataset, train_dataloader, val_dataloader):
        given = [name for name, value in dict(folder = folder, dataset = dataset, train_dataloader = train_dataloader).items() if exists(value)]
        if len(given) != 1:
            raise ValueError(f'pass exactly one of folder=, dataset= or train_dataloader= (got {given or "none"})')
        self._train_dl = self._valid_dl = None
        self.train_ds = self.valid_ds = None
        if exists(train_dataloader):
            self._train_dl = self.accelerator.prepare(train_dataloader)
            self._valid_dl = self.accelerator.prepare(val_dataloader) if exists(val_dataloader) else self._train_dl
            self._train_position = self._valid_position = 0
            self._train_iter = self._valid_iter = None
            return

        ds = dataset if exists(dataset) else self.make_dataset(folder)
        if len(ds) == 0:
            raise ValueError('the dataset is empty')
        if self.valid_frac > 0 and len(ds) > 1:
            valid_size = min(len(ds) - 1, max(1, round(self.valid_frac * len(ds))))
            generator = torch.Generator().manual_seed(self.random_split_seed)
            self.train_ds, self.valid_ds = random_split(ds, [len(ds) - valid_size, valid_size], generator = generator)
            self.print(f'training with {len(self.train_ds)} samples, validating on {len(self.valid_ds)}')
        else:
            self.train_ds = self.valid_ds = ds
        self._train_position = self._valid_position = 0
        self._train_iter = self._valid_iter = None

    def _stream(self, train: bool):
        """A fresh iterator over the train / validation stream, starting where the last one stopped."""
        if exists(self._train_dl):
            dl = self._train_dl if train else self._valid_dl
            def cycle():
                while True:
                    yield from dl
            return cycle()
        ds = self.train_ds if train else self.valid_ds
        position = self._train_position if train else self._valid_position
        seed = self.random_split_seed + (0 if train else 1)
        sampler = StreamBatchSampler(len(ds), self.batch_size, rank = self.accelerator.process_index,
                                     world_size = self.accelerator.num_processes, seed = seed, start = position)
        from audiolm_pytorch.data import get_dataloader  # pads audio to the longest item, strings pass through
        dl = get_dataloader(ds, batch_sampler = sampler, num_workers = self.dl_num_workers,
                        generator = torch.Generator().manual_seed(seed * 7919 + position),  # no global RNG draw
                        pin_memory = self.device.type == 'cuda', persistent_workers = False)
        return iter(dl)

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
        folder = self.results_folder
        if self.is_main:
            has_content = folder.is_dir() and any(folder.iterdir())
            if has_content and force_clear is None:
                interactive = sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty() and self.accelerator.num_processes == 1
                if interactive:
                    answer = input(f'clear previous results and checkpoints in {folder}? (y/n) ')
                    force_clear = answer.strip().lower() in ('y', 'yes')
                else:
                    logger.info('keeping the existing contents of %s (no terminal to ask; pass '
                                'force_clear_prev_results=True to clear it)', folder)
            if has_content and force_clear:
                for child in folder.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            folder.mkdir(parents = True, exist_ok = True)
            for stale in folder.glob('.*.pt.*.tmp'):  # left by a process killed while writing a checkpoint
                logger.warning('removing the partial checkpoint %s left by an interrupted write', stale)
                stale.unlink(missing_ok = True)
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

    def autocast(self):
        """Autocast for this trainer's precision (not Accelerate's global one, which a later trainer may change)."""
        dtype = dict(bf16 = torch.bfloat16, fp16 = torch.float16).get(self.mixed_precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type = self.device.type, dtype = dtype)

    def print(self, message: str):
        self.accelerator.print(message)

    # ---------------------------------------------------------------- the step

    def _clip(self, phase: Phase) -> Tensor:
        from accelerate.utils import DistributedType
        max_norm = default(phase.max_grad_norm, float('inf'))
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.XLA):
            norm = self.accelerator.clip_grad_norm_(phase.params, max_norm)
            return torch.as_tensor(norm if exists(norm) else 0.)
        self.accelerator.unscale_gradients(optimizer = phase.optimizer)
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
        if finite:
            for phase in self._phases:
                phase.optimizer.step()
                if exists(phase.scheduler):
                    phase.scheduler.step()
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

        if exists(self.ema):
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
        while self.steps < self.num_train_steps:
            logs = self.train_step()
            bar.update(1)
            bar.set_postfix({k: f'{v:.3g}' for k, v in logs.items() if not k.endswith('grad_norm')}, refresh = False)
            if exists(log_fn):
                log_fn(logs)
        bar.close()
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
            finally:
                self.train_module.train()
        if not self.is_main:
            return
        self._record(step, valid)
        self.accelerator.log(valid, step = step)
        self.print(f'{step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in valid.items()))

        from audiolm_pytorch.audio import save_audio
        sample_dir = self.results_folder / 'samples'
        for sample in samples:
            save_audio(sample_dir / f'{self.checkpoint_name}.{step}.{sample.name}.wav', sample.wave.float().cpu(), sample.sample_hz)
        self._plot(step, samples)

    def _plot(self, step: int, samples: list[Sample]):
        try:
            from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched
        except ImportError:
            if not self._warned_no_plot:
                logger.info('matplotlib is not installed: skipping plots (pip install "audiolm-pytorch[plot]")')
                self._warned_no_plot = True
            return

        if samples:
            from audiolm_pytorch.audio import MelSpectrogram
            fig = Figure(figsize = (6, 2.2 * len(samples)))
            for index, sample in enumerate(samples):
                wave = sample.wave.float().cpu().reshape(-1)
                n_fft = min(1024, 2 ** max(4, int(math.log2(max(wave.numel(), 2)))))  # short clips: smaller window
                mel = MelSpectrogram(sample_hz = sample.sample_hz, n_fft = n_fft, hop_length = n_fft // 4,
                                     n_mels = min(64, n_fft // 4), log = True)
                spec = mel(nn.functional.pad(wave, (0, max(0, n_fft - wave.numel())))).numpy()
                ax = fig.add_subplot(len(samples), 1, index + 1)
                ax.imshow(spec, origin = 'lower', aspect = 'auto', interpolation = 'nearest')
                ax.set_title(f'{sample.name} (step {step})', fontsize = 8)
                ax.set_ylabel('mel bin')
            fig.tight_layout()
            fig.savefig(self.results_folder / 'samples' / f'{self.checkpoint_name}.{step}.mel.png', dpi = 80)

        fig = Figure(figsize = (6, 3.5))
        ax = fig.add_subplot(1, 1, 1)
        for key, history in self.loss_history.items():
            if key.endswith('grad_norm') or not history:
                continue
            steps, values = zip(*history)
            ax.plot(steps, values, label = key, marker = 'o' if len(steps) < 20 else None, markersize = 3)
        ax.set_xlabel('step')
        ax.set_ylabel('loss')
        ax.legend(fontsize = 7)
        fig.tight_layout()
        fig.savefig(self.results_folder / f'{self.checkpoint_name}.losses.png', dpi = 80)

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

    def load(self, path: str | Path, *, restore_rng: bool = True) -> dict:
        """Restore weights, EMA, optimizers, schedulers, step, data position and RNG states from ``path``."""
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
        for phase in self._phases:
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
