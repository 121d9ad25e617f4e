"""How a :class:`~audiolm_pytorch.trainers.base.Trainer` is set up: the Accelerate accelerator (trackers, mixed
precision, DDP options), the warmup + scheduler chain, the data (folder / dataset / dataloaders, a seeded validation
split and the resumable batch stream) and the results folder. A mixin of ``Trainer``; its state lives there."""

from __future__ import annotations

import os

from audiolm_pytorch.trainers.artifacts import prepare_results_folder
from audiolm_pytorch.trainers.data_stream import Batch, cycle, route_batch, split_train_valid, stream_batches
from audiolm_pytorch.utils import exists

__all__ = ['TrainerSetup']


class TrainerSetup:
    """Construction helpers of ``Trainer`` (accelerator, scheduler, data, results folder)."""

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
