"""Reference-keyword decisions for the trainers (SoundStream, semantic / coarse / fine, SoundStorm, MuLaN)."""

from __future__ import annotations

from audiolm_pytorch.compat.core import (AddMethod, Drop, Fixed, Handle, Ignore, LegacyKeywordError, Note,
                                         Positional, Rename)


def _split_batches(obj, value, args, kwargs):
    """``split_batches=True``: ``batch_size`` is the global batch, split over the processes."""
    if not value:
        return args, kwargs
    accelerator = kwargs.get('accelerator')
    if accelerator is not None:
        num_processes = accelerator.num_processes
    else:
        from accelerate import PartialState
        num_processes = PartialState().num_processes
    batch_size = kwargs.get('batch_size')
    if batch_size is None or batch_size % num_processes:
        raise LegacyKeywordError(f'split_batches=True: batch_size={batch_size} must be a multiple of the '
                                 f'{num_processes} processes (it is the global batch)')
    kwargs['batch_size'] = batch_size // num_processes
    return args, kwargs


def _init_process_group_timeout(obj, value, args, kwargs):
    """Add ``InitProcessGroupKwargs(timeout=...)`` to the Accelerator's handlers (as the reference does)."""
    if value is None:
        return args, kwargs
    if kwargs.get('accelerator') is not None:
        raise LegacyKeywordError('init_process_group_timeout_seconds= with accelerator=: the process group of a '
                                 'given Accelerator already exists; set its timeout where it is built')
    from datetime import timedelta
    from accelerate.utils import InitProcessGroupKwargs
    accelerate_kwargs = dict(kwargs.get('accelerate_kwargs') or {})
    handlers = list(accelerate_kwargs.get('kwargs_handlers', []))
    if not any(isinstance(h, InitProcessGroupKwargs) for h in handlers):
        handlers.append(InitProcessGroupKwargs(timeout = timedelta(seconds = value)))
    accelerate_kwargs['kwargs_handlers'] = handlers
    kwargs['accelerate_kwargs'] = accelerate_kwargs
    return args, kwargs


def _average_valid_loss(obj, value, args, kwargs):
    if value:
        kwargs.setdefault('num_valid_batches', kwargs.get('grad_accum_every', 1))
    return args, kwargs


def _semantic_trainer_positional(obj, args, kwargs):
    """The reference's order is ``(wav2vec, transformer, ...)``, ours ``(transformer, wav2vec, ...)``: a call
    whose first positional is a semantic tokenizer and second a ``SemanticTransformer`` is swapped."""
    if len(args) >= 2:
        from audiolm_pytorch.lm.semantic import SemanticTransformer
        if isinstance(args[1], SemanticTransformer) and not isinstance(args[0], SemanticTransformer):
            args = (args[1], args[0], *args[2:])
    return args, kwargs


def _stage_data_tuple_to_kwargs(self, data):
    """A dataset item (collated batch) -> the wrapper's keyword arguments, fields routed by type."""
    from audiolm_pytorch.trainers.data_stream import route_batch
    batch = route_batch(data, self.device)
    return {**self.wrapper_inputs(batch), **({'text': batch.texts} if batch.texts is not None else {})}


def _mulan_data_tuple_to_kwargs(self, data):
    from audiolm_pytorch.trainers.data_stream import route_batch
    from audiolm_pytorch.trainers.mulan import mulan_inputs
    wavs, text = mulan_inputs(route_batch(data, self.device))
    return dict(wavs = wavs, **text)


def _soundstorm_warmup(self, step):
    """Learning rate at ``step`` of the linear warmup from ``initial_lr`` to ``lr`` (``num_warmup_steps``)."""
    if step >= self.warmup_steps:
        return self.lr
    return self.warmup_start_lr + (self.lr - self.warmup_start_lr) * step / self.warmup_steps


def _set_model_as_ema_model_(self):
    """Copy the EMA codec's weights into the online codec (no-op without EMA)."""
    if self.ema_model is not None:
        self.soundstream.load_state_dict(self.ema_model.state_dict())


def _multiscale_discriminator_iter(self):
    """``(name, module)`` of every discriminator of the codec."""
    for index, module in enumerate(self.soundstream._discriminator_modules()):
        yield f'discriminator_{index}_{type(module).__name__}', module


def _multiscale_discriminator_optim_iter(self):
    """``(name, optimizer)``: here one optimizer covers every discriminator."""
    for phase in self._phases:
        if phase.name == 'discriminator':
            yield 'discriminator', phase.optimizer


def _log(self, **logs):
    """Send scalars to the trackers at the current step."""
    self.accelerator.log(logs, step = self.steps)


_SPLIT_BATCHES = Handle(note = 'False: batch_size is per process (as here by default); True: batch_size is the '
                               'global batch and is divided by the number of processes', fn = _split_batches)
_TIMEOUT = Handle(note = 'adds InitProcessGroupKwargs(timeout=) to the Accelerator (not with accelerator=)',
                  fn = _init_process_group_timeout)
_DROP_LAST = Ignore(note = 'the batch stream here is endless (epochs wrap around, batches are always full), so '
                           'there is no last partial batch to keep or drop')
_PRINT = {'msg': Rename(to = 'message')}
_AVERAGE_VALID = Handle(note = 'True: each validation loss is averaged over grad_accum_every batches '
                               '(num_valid_batches=)', fn = _average_valid_loss)
_STAGE_TRAINER = {
    'split_batches': _SPLIT_BATCHES,
    'init_process_group_timeout_seconds': _TIMEOUT,
    'drop_last': _DROP_LAST,
    'average_valid_loss_over_grad_accum_every': _AVERAGE_VALID,
    'accelerate_kwargs': Note(note = 'default None = {}'),
}

TABLES = {
    'SoundStreamTrainer': {
        '__init__': {
            'val_dataset': Rename(to = 'valid_dataset'),
            'split_batches': _SPLIT_BATCHES,
            'init_process_group_timeout_seconds': _TIMEOUT,
            'dataloader_drop_last': _DROP_LAST,
            'warmup_steps': Note(note = 'default 0 here (no warmup) vs 1000 in the reference; pass warmup_steps=1000 '
                                        'for the reference schedule (kept at 0 pending the codec-quality study)'),
            'accelerate_kwargs': Note(note = 'default None = {}'),
        },
        'print': _PRINT,
        'set_model_as_ema_model_': {'*method': AddMethod(fn = _set_model_as_ema_model_,
                                                         note = 'copies the EMA weights into the online codec')},
        'multiscale_discriminator_iter': {'*method': AddMethod(fn = _multiscale_discriminator_iter,
                                                               note = '(name, module) of each discriminator')},
        'multiscale_discriminator_optim_iter': {'*method': AddMethod(
            fn = _multiscale_discriminator_optim_iter, note = 'one optimizer covers every discriminator here')},
        'log': {'*method': AddMethod(fn = _log, note = 'accelerator.log at the current step')},
    },
    'SemanticTransformerTrainer': {
        '__init__': {**_STAGE_TRAINER,
                     '*args': Positional(fn = _semantic_trainer_positional,
                                         note = 'the reference positional order (wav2vec, transformer) is detected '
                                                'and swapped')},
        'print': _PRINT,
        'data_tuple_to_kwargs': {'*method': AddMethod(fn = _stage_data_tuple_to_kwargs,
                                                      note = 'fields routed by type')},
    },
    'CoarseTransformerTrainer': {
        '__init__': {**_STAGE_TRAINER,
                     'ds_fields': Ignore(note = 'dataset fields are routed by type here (tensors = audio at the '
                                                'rates the stage needs, strings = text)')},
        'print': _PRINT,
    },
    'FineTransformerTrainer': {
        '__init__': {**_STAGE_TRAINER,
                     'dataset_normalize': Drop(note = 'unused by the reference trainer too')},
        'print': _PRINT,
        'data_tuple_to_kwargs': {'*method': AddMethod(fn = _stage_data_tuple_to_kwargs,
                                                      note = 'fields routed by type')},
    },
    'SoundStormTrainer': {
        '__init__': {
            'only_train_generator': Drop(note = 'there is no Token-Critic here: only the generator is ever trained'),
            'only_train_critic': Fixed(value = False, otherwise = 'refuse',
                                       note = 'there is no Token-Critic here (SoundStorm(self_token_critic=) is '
                                              'refused); train the generator'),
            'split_batches': _SPLIT_BATCHES,
            'drop_last': _DROP_LAST,
            'num_warmup_steps': Note(note = 'optional here (None = no warmup; the reference requires it); the '
                                            'warmup from initial_lr and the cosine annealing after it are as in '
                                            'the reference'),
        },
        'print': _PRINT,
        'warmup': {'*method': AddMethod(fn = _soundstorm_warmup, note = 'learning rate at a step of the warmup')},
    },
    'MuLaNTrainer': {
        '__init__': {
            'num_train_steps': Note(note = 'optional as in the reference: None = len(dataset) steps (needs dataset=)'),
        },
        'print': _PRINT,
        'data_tuple_to_kwargs': {'*method': AddMethod(fn = _mulan_data_tuple_to_kwargs,
                                                      note = 'audio / token ids / strings routed by type')},
    },
}
