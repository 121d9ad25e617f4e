"""The shared Accelerate loop, on a toy Checkpointable model and a toy dataset (no codec / LM needed)."""

import logging
import math

import pytest
import torch
from torch import nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.trainers.base import (
    NonFiniteLossError,
    Phase,
    StreamBatchSampler,
    Trainer,
    route_batch,
)
from tests.helpers import ToyDenoiser, ToyTrainer, ToyWaves


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


# ---- fp16 loss scaling with two optimizers, accumulation, the final checkpoint -------------------------------------

class TwoHeads(Checkpointable, nn.Module):
    """Two independent halves, as a GAN's generator and discriminator: each loss reaches only its own half."""

    def __init__(self, *, dim = 16):
        super().__init__()
        self.a, self.b, self.dim = nn.Linear(dim, dim), nn.Linear(dim, dim), dim

    def forward(self, wave):
        frames = wave.reshape(wave.shape[0], -1, self.dim)
        return ((self.a(frames) - frames) ** 2).mean(), ((self.b(frames) + frames.flip(-1)) ** 2).mean()


class TwoPhaseTrainer(Trainer):
    checkpoint_name = 'two'

    def phases(self):
        return [Phase('a', list(self.model.a.parameters()), self.max_grad_norm),
                Phase('b', list(self.model.b.parameters()), self.max_grad_norm)]

    def compute_loss(self, module, batch):
        loss_a, loss_b = module(batch.waves[0])
        return loss_a + loss_b, {}


class Deterministic(Checkpointable, nn.Module):
    def __init__(self, *, dim = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 32), nn.GELU(), nn.Linear(32, dim))
        self.dim = dim

    def forward(self, wave):
        frames = wave.reshape(wave.shape[0], -1, self.dim)
        return nn.functional.mse_loss(self.net(frames), frames.flip(-1))


def accelerator(scale = None):
    """A CPU accelerator; with ``scale`` it loss-scales like GPU fp16: ``backward`` scales the loss, prepared
    optimizers step through the GradScaler and ``unscale_gradients`` unscales (as with native AMP + fp16),
    while the forward stays in fp32 (so results can be compared exactly with unscaled training)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state()
    acc = Accelerator(cpu = True, mixed_precision = 'no', log_with = None)
    if scale is not None:
        acc.scaler = torch.amp.GradScaler('cpu', init_scale = scale, growth_interval = 1)

        def unscale_gradients(optimizer = None):
            for opt in (acc._optimizers if optimizer is None else [optimizer]):
                acc.scaler.unscale_(opt.optimizer)
        acc.unscale_gradients = unscale_gradients
    return acc


def two_phase(tmp_path, name, acc, **kwargs):
    torch.manual_seed(0)
    config = dict(num_train_steps = 4, batch_size = 2, dataset = ToyWaves(), lr = 1e-3, results_folder = tmp_path / name,
                  force_clear_prev_results = True, progress_bar = False, save_results_every = 100,
                  save_model_every = 100, accelerator = acc, max_grad_norm = 0.5)
    return TwoPhaseTrainer(TwoHeads(), **{**config, **kwargs})


def test_fp16_loss_scaling_with_two_optimizers_matches_unscaled_training(tmp_path):
    reference = two_phase(tmp_path, 'ref', accelerator())
    ref_logs = [reference.train_step() for _ in range(3)]

    scaled = two_phase(tmp_path, 'scaled', accelerator(scale = 2. ** 12))
    grads_at_step = {}
    for phase in scaled._phases:  # the gradients each optimizer really steps on
        phase.optimizer.optimizer.register_step_pre_hook(
            lambda opt, args, kwargs, name = phase.name: grads_at_step.setdefault(name, []).append(
                torch.cat([p.grad.reshape(-1) for p in opt.param_groups[0]['params']]).norm().item()))
    logs = [scaled.train_step() for _ in range(3)]

    for got, want in zip(logs, ref_logs):  # clipping sees the true (unscaled) norms of both phases
        assert got['a_grad_norm'] == pytest.approx(want['a_grad_norm'], rel = 1e-4)
        assert got['b_grad_norm'] == pytest.approx(want['b_grad_norm'], rel = 1e-4)
    for name in ('a', 'b'):  # and so does every optimizer (the second one used to get grads / scale again)
        assert grads_at_step[name] == pytest.approx([min(l[f'{name}_grad_norm'], 0.5) for l in ref_logs], rel = 1e-3)
    for key, value in reference.model.state_dict().items():
        torch.testing.assert_close(scaled.model.state_dict()[key], value, rtol = 1e-5, atol = 1e-6)
    assert scaled.accelerator.scaler.get_scale() == 2. ** 15, 'the scale grows once per step, not once per optimizer'


class LoudTwoPhaseTrainer(TwoPhaseTrainer):
    def compute_loss(self, module, batch):
        loss, logs = super().compute_loss(module, batch)
        return 100 * loss, logs   # gradients ~100: times a near-maximal loss scale, they overflow fp32


def test_fp16_overflow_lowers_the_loss_scale_instead_of_stopping(tmp_path):
    torch.manual_seed(0)
    trainer = LoudTwoPhaseTrainer(TwoHeads(), num_train_steps = 20, batch_size = 2, dataset = ToyWaves(), lr = 1e-3,
                                  results_folder = tmp_path / 'r', force_clear_prev_results = True, progress_bar = False,
                                  save_results_every = 100, save_model_every = 100, accelerator = accelerator(scale = 3e38),
                                  max_consecutive_nonfinite = 1)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    first = trainer.train_step()   # overflow: skipped, and the scale must come down (it used to stay, so every step overflowed)
    assert not math.isfinite(first['a_grad_norm'])
    assert trainer.accelerator.scaler.get_scale() == pytest.approx(1.5e38)
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items()), 'overflow step not skipped'
    for _ in range(12):
        if math.isfinite(trainer.train_step()['a_grad_norm']):
            break
    else:
        raise AssertionError('the loss scale never came down to a usable value')
    assert 1 <= trainer.nonfinite_steps < 12
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_fp16_loss_scale_is_checkpointed_and_restored(tmp_path):
    trainer = two_phase(tmp_path, 'run', accelerator(scale = 2. ** 12), save_model_every = 2)
    for _ in range(3):  # checkpoint after step 2: three growths
        trainer.train_step()
    resumed = two_phase(tmp_path, 'run', accelerator(scale = 2. ** 12), force_clear_prev_results = False)
    resumed.load(tmp_path / 'run' / 'two.2.pt')
    assert resumed.accelerator.scaler.get_scale() == 2. ** 15


@pytest.mark.parametrize('batch_size, grad_accum_every', [(2, 2), (1, 4)])
def test_accumulated_micro_batches_give_the_update_of_one_big_batch(tmp_path, batch_size, grad_accum_every):
    def run(name, b, g):
        torch.manual_seed(0)
        trainer = ToyTrainer(Deterministic(), num_train_steps = 3, batch_size = b, grad_accum_every = g, lr = 1e-2,
                             dataset = ToyWaves(), results_folder = tmp_path / name, force_clear_prev_results = True,
                             progress_bar = False, save_results_every = 100, save_model_every = 100)
        logs = [trainer.train_step() for _ in range(3)]
        return logs, trainer.model.state_dict()

    big_logs, big = run('big', 4, 1)
    small_logs, small = run('small', batch_size, grad_accum_every)
    for got, want in zip(small_logs, big_logs):
        assert got['loss'] == pytest.approx(want['loss'], rel = 1e-5)
        assert got['grad_norm'] == pytest.approx(want['grad_norm'], rel = 1e-5)
    for key, value in big.items():
        torch.testing.assert_close(small[key], value, rtol = 1e-5, atol = 1e-6)


def test_train_writes_the_last_step_even_off_the_save_interval(tmp_path):
    torch.manual_seed(0)
    trainer = ToyTrainer(Deterministic(), num_train_steps = 6, batch_size = 2, dataset = ToyWaves(), lr = 1e-2,
                         results_folder = tmp_path / 'r', force_clear_prev_results = True, progress_bar = False,
                         save_results_every = 100, save_model_every = 4)
    trainer.train()
    assert sorted(p.name for p in (tmp_path / 'r').glob('toy.*.pt')) == ['toy.0.pt', 'toy.4.pt', 'toy.5.pt']
    pkg = torch.load(tmp_path / 'r' / 'toy.5.pt', weights_only = True)
    assert pkg['trainer']['step'] == 6
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(pkg['model'][key], value), 'the final weights must be saved'
    trainer.train()  # nothing left to do: no new checkpoint, no error
    assert len(list((tmp_path / 'r').glob('toy.*.pt'))) == 3


def test_accelerate_gradient_accumulation_is_refused(tmp_path):
    with pytest.raises(ValueError, match = 'grad_accum_every'):
        ToyTrainer(Deterministic(), num_train_steps = 2, batch_size = 2, dataset = ToyWaves(),
                   results_folder = tmp_path / 'r', progress_bar = False, force_clear_prev_results = True,
                   accelerate_kwargs = dict(gradient_accumulation_steps = 4))
