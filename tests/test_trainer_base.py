"""The shared Accelerate loop, on a toy Checkpointable model and a toy dataset (no codec / LM needed)."""

import logging
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.trainers.base import (
    NonFiniteLossError, Phase, Sample, StreamBatchSampler, Trainer, route_batch,
)


class ToyDenoiser(Checkpointable, nn.Module):
    def __init__(self, *, dim = 16, dropout = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, dim))
        self.dim = dim

    def forward(self, wave):
        frames = wave.reshape(wave.shape[0], -1, self.dim)
        noisy = frames + 0.1 * torch.randn_like(frames)          # consumes the torch RNG: resume must restore it
        return nn.functional.mse_loss(self.net(noisy), frames)


class ToyWaves(Dataset):
    """Random crops of fixed sine waves (the crop offset consumes the torch RNG, as SoundDataset does)."""

    def __init__(self, n = 10, length = 64, text = None):
        t = torch.arange(256) / 256
        self.waves = [torch.sin(2 * math.pi * (i + 1) * t) for i in range(n)]
        self.length, self.text = length, text

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, index):
        offset = int(torch.randint(0, 256 - self.length, ()))
        wave = self.waves[index][offset:offset + self.length]
        if self.text == 'first':
            return f'text {index}', wave
        if self.text == 'last':
            return wave, f'text {index}'
        return wave


class ToyTrainer(Trainer):
    checkpoint_name = 'toy'

    def __init__(self, model, **kwargs):
        self.nan_on_steps = set()
        self.seen_texts = []
        super().__init__(model, **kwargs)

    def compute_loss(self, module, batch):
        loss = module(batch.waves[0])
        if batch.texts is not None:
            self.seen_texts.extend(batch.texts)
        if self.steps in self.nan_on_steps:
            loss = loss * float('nan')
        return loss, {}

    def make_samples(self, batch):
        return [Sample('input', batch.waves[0][0], 16000)]


def make(tmp_path, name = 'results', **kwargs):
    kwargs = dict(dict(num_train_steps = 6, batch_size = 2, dataset = ToyWaves(), lr = 1e-2, save_results_every = 100,
                       save_model_every = 100, results_folder = tmp_path / name, progress_bar = False,
                       force_clear_prev_results = True), **kwargs)
    return ToyTrainer(ToyDenoiser(), **kwargs)


def test_step_numbering_checkpoint_names_samples_and_plots(tmp_path):
    trainer = make(tmp_path, num_train_steps = 9, save_model_every = 4, save_results_every = 4)
    trainer.train()
    folder = tmp_path / 'results'
    assert sorted(p.name for p in folder.glob('toy.*.pt')) == ['toy.0.pt', 'toy.4.pt', 'toy.8.pt']
    assert sorted(p.name for p in (folder / 'samples').glob('*.wav')) == ['toy.0.input.wav', 'toy.4.input.wav', 'toy.8.input.wav']
    assert (folder / 'samples' / 'toy.8.mel.png').stat().st_size > 1000
    assert (folder / 'toy.losses.png').stat().st_size > 1000
    assert not list(folder.glob('.*.tmp'))

    pkg = torch.load(folder / 'toy.8.pt', weights_only = True)
    assert pkg['kind'] == 'ToyDenoiser' and pkg['trainer']['step'] == 9
    assert set(pkg['trainer']['rng'][0]) >= {'torch', 'numpy', 'python'}
    assert 'valid_loss' in pkg['trainer']['loss_history']
    rebuilt = ToyDenoiser.init_and_load_from(folder / 'toy.8.pt')
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)


def test_loss_falls(tmp_path):
    trainer = make(tmp_path, num_train_steps = 40)
    losses = [trainer.train_step()['loss'] for _ in range(40)]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])


def test_exact_resume_with_accumulation_warmup_ema_and_dropout(tmp_path):
    common = dict(grad_accum_every = 2, warmup_steps = 3, use_ema = True, ema_update_after_step = 1, ema_update_every = 1,
                  ema_beta = 0.9, save_results_every = 2, scheduler = torch.optim.lr_scheduler.StepLR,
                  scheduler_kwargs = dict(step_size = 2, gamma = 0.5))
    torch.manual_seed(0)
    reference = make(tmp_path, 'ref', **common)
    expected = [reference.train_step()['loss'] for _ in range(6)]

    torch.manual_seed(0)
    first = make(tmp_path, 'run', save_model_every = 3, **common)
    for _ in range(4):  # checkpoint after step 3, then one more step that the resumed run must redo identically
        first.train_step()

    torch.manual_seed(123)  # a different process state: everything must come from the checkpoint
    resumed = make(tmp_path, 'run', force_clear_prev_results = False, **common)
    resumed.load(tmp_path / 'run' / 'toy.3.pt')
    assert resumed.steps == 4
    got = [resumed.train_step()['loss'] for _ in range(2)]
    assert got == expected[4:]
    for key, value in reference.ema_model.state_dict().items():
        assert torch.equal(resumed.ema_model.state_dict()[key], value)
    assert resumed._phases[0].optimizer.param_groups[0]['lr'] == reference._phases[0].optimizer.param_groups[0]['lr']


def test_validation_and_sampling_do_not_change_the_trajectory(tmp_path):
    runs = []
    for name, every in (('often', 1), ('never', 1000)):
        torch.manual_seed(0)
        trainer = make(tmp_path, name, save_results_every = every)
        runs.append([trainer.train_step()['loss'] for _ in range(3)])
    assert runs[0] == runs[1]
    assert len(list((tmp_path / 'often' / 'samples').glob('*.wav'))) == 3


def test_nonfinite_steps_are_skipped_then_stop(tmp_path, caplog):
    trainer = make(tmp_path, max_consecutive_nonfinite = 3)
    trainer.train_step()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.nan_on_steps = {1, 3, 4, 5}
    with caplog.at_level(logging.WARNING):
        trainer.train_step()
    assert 'non-finite' in caplog.text and trainer.nonfinite_steps == 1
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), 'a NaN step must not touch the weights'
    trainer.train_step()  # finite: resets the consecutive count
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())
    trainer.train_step()
    trainer.train_step()
    with pytest.raises(NonFiniteLossError, match = 'consecutive'):
        trainer.train_step()
    assert trainer.nonfinite_steps == 4


def test_valid_split_is_seeded_and_disjoint(tmp_path):
    a = make(tmp_path, 'a', valid_frac = 0.3, random_split_seed = 7)
    b = make(tmp_path, 'b', valid_frac = 0.3, random_split_seed = 7)
    assert list(a.valid_ds.indices) == list(b.valid_ds.indices) and len(a.valid_ds) == 3
    assert not set(a.valid_ds.indices) & set(a.train_ds.indices)
    c = make(tmp_path, 'c', valid_frac = 0.3, random_split_seed = 8)
    assert list(c.valid_ds.indices) != list(a.valid_ds.indices) or list(c.train_ds.indices) != list(a.train_ds.indices)


@pytest.mark.parametrize('order', ['first', 'last'])
def test_text_audio_datasets_routed_by_type(tmp_path, order):
    trainer = make(tmp_path, dataset = ToyWaves(text = order), save_results_every = 1000)
    trainer.train_step()  # step 0 also validates: one training and one validation batch of 2
    assert len(trainer.seen_texts) == 4 and all(t.startswith('text ') for t in trainer.seen_texts)
    batch = route_batch(('a', torch.zeros(3)), 'cpu')
    assert batch.texts == ['a'] and batch.waves[0].shape == (3,)


def test_stream_sampler_shards_and_resumes():
    one = StreamBatchSampler(5, 4, seed = 3)
    it = iter(one)
    single = [next(it) for _ in range(6)]
    two = [iter(StreamBatchSampler(5, 2, rank = r, world_size = 2, seed = 3)) for r in range(2)]
    for batch in single:
        assert batch == next(two[0]) + next(two[1])
    # every epoch is a permutation; resuming from a position continues the same stream
    flat = sum(single, [])
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert next(iter(StreamBatchSampler(5, 4, seed = 3, start = 4))) == single[4]


def test_results_folder_kept_without_tty_and_cleared_on_request(tmp_path):
    folder = tmp_path / 'results'
    folder.mkdir()
    (folder / 'keep.txt').write_text('x')
    (folder / '.toy.4.pt.abc123.tmp').write_bytes(b'partial')
    make(tmp_path, force_clear_prev_results = None)
    assert (folder / 'keep.txt').exists(), 'no terminal attached: existing results are kept, never prompted for'
    assert not (folder / '.toy.4.pt.abc123.tmp').exists(), 'stale partial checkpoint writes are removed'
    make(tmp_path, force_clear_prev_results = False)
    assert (folder / 'keep.txt').exists()
    make(tmp_path, force_clear_prev_results = True)
    assert not (folder / 'keep.txt').exists()


def test_two_trainers_in_one_process_and_bf16(tmp_path):
    a = make(tmp_path, 'a', save_model_every = 1)
    b = make(tmp_path, 'b', save_model_every = 1)
    assert a.accelerator is not b.accelerator
    for _ in range(2):
        assert math.isfinite(a.train_step()['loss']) and math.isfinite(b.train_step()['loss'])
    assert (tmp_path / 'a' / 'toy.1.pt').exists() and (tmp_path / 'b' / 'toy.1.pt').exists()
    # another precision in the same process (a notebook): Accelerate's global state is replaced, both keep training
    c = make(tmp_path, 'c', accelerate_kwargs = dict(mixed_precision = 'bf16'))
    assert c.mixed_precision == 'bf16' and a.mixed_precision == 'no'
    assert math.isfinite(c.train_step()['loss']) and math.isfinite(a.train_step()['loss'])
    with a.autocast():
        assert a.model.net[0](torch.randn(2, 16)).dtype == torch.float32
    with c.autocast():
        assert c.model.net[0](torch.randn(2, 16)).dtype == torch.bfloat16
    # a later trainer with default settings does not inherit bf16 from the global Accelerate state
    e = make(tmp_path, 'e')
    assert e.mixed_precision == 'no'
    # sharing one accelerator is allowed too
    d = make(tmp_path, 'd', accelerator = a.accelerator)
    assert math.isfinite(d.train_step()['loss'])


def test_custom_tracker_receives_losses(tmp_path):
    from accelerate.tracking import GeneralTracker

    class Recorder(GeneralTracker):
        name, requires_logging_directory, main_process_only = 'recorder', False, True

        def __init__(self):
            super().__init__()
            self.logged = []

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            self.config = values

        def log(self, values, step = None, **kwargs):
            self.logged.append((step, dict(values)))

    recorder = Recorder()
    trainer = make(tmp_path, accelerate_kwargs = dict(log_with = [recorder]), save_results_every = 2)
    trainer.train()
    steps = [s for s, v in recorder.logged if 'loss' in v]
    assert steps == list(range(6)) and recorder.config['batch_size'] == 2
    assert [s for s, v in recorder.logged if 'valid_loss' in v] == [0, 2, 4]


def test_tensorboard_is_the_default_tracker_when_installed(tmp_path):
    pytest.importorskip('tensorboard', reason = 'tensorboard is part of the [test] extra')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make(tmp_path, save_results_every = 2)
    assert trainer.accelerator.log_with, 'tensorboard should be picked by default when it is installed'
    trainer.train()
    trainer.accelerator.end_training()
    event_files = sorted(tmp_path.rglob('events.out.tfevents.*'))
    assert event_files, f'no TensorBoard event file under {tmp_path}'
    scalars = {}
    for path in event_files:
        events = EventAccumulator(str(path))
        events.Reload()
        for tag in events.Tags()['scalars']:
            scalars[tag] = [event.step for event in events.Scalars(tag)]
    assert scalars.get('loss') == list(range(6))
    assert scalars.get('valid_loss') == [0, 2, 4]


def test_wandb_tracker_names_project_and_run_and_ends_the_run(tmp_path, monkeypatch):
    # wandb itself is not installed in CI: check what the trainer asks of Accelerate's tracker API
    with pytest.raises(ValueError, match = 'use_wandb_tracking'):
        with make(tmp_path, 'plain').wandb_tracker(project = 'p'):
            pass

    import importlib.util
    if importlib.util.find_spec('wandb') is None:
        with pytest.raises(ImportError, match = r'audiolm-pytorch\[wandb\]'):
            make(tmp_path, 'missing', use_wandb_tracking = True)

    trainer = make(tmp_path, accelerate_kwargs = dict(log_with = None), use_wandb_tracking = True)
    calls = []
    monkeypatch.setattr(trainer.accelerator, 'init_trackers',
                        lambda project, config = None, init_kwargs = None: calls.append(('init', project, config, init_kwargs)))
    monkeypatch.setattr(trainer.accelerator, 'end_training', lambda: calls.append(('end',)))
    with trainer.wandb_tracker(project = 'audiolm', run = 'soundstream-1'):
        assert calls[0][:2] == ('init', 'audiolm') and calls[0][3] == {'wandb': {'name': 'soundstream-1'}}
        assert calls[0][2]['batch_size'] == 2
    assert calls[-1] == ('end',)


def test_phase_and_argument_errors(tmp_path):
    with pytest.raises(ValueError, match = 'exactly one'):
        make(tmp_path, dataset = None)
    with pytest.raises(ValueError, match = 'valid_frac'):
        make(tmp_path, valid_frac = 1.5)
    assert isinstance(make(tmp_path)._phases[0], Phase)


def test_a_skipped_step_leaves_the_ema_alone(tmp_path):
    trainer = make(tmp_path, use_ema = True, ema_update_after_step = 0, ema_update_every = 1)
    trainer.train_step()
    ema_before = {k: v.clone() for k, v in trainer.ema.ema_model.state_dict().items()}
    ema_step = trainer.ema.step
    trainer.nan_on_steps = {1}
    trainer.train_step()
    assert trainer.ema.step == ema_step
    for key, value in trainer.ema.ema_model.state_dict().items():
        assert torch.equal(value, ema_before[key])
    trainer.train_step()
    assert trainer.ema.step == ema_step + 1
