"""Review of the shared loop: fp16 loss scaling with several optimizers, gradient accumulation, final checkpoint.

GPU fp16 is simulated on CPU: a ``GradScaler('cpu')`` is put into a full-precision Accelerator, so the loss is
scaled by a power of two (exact in fp32) and a correct loop must give the same weights as no scaling at all.
"""

import math

import pytest
import torch
from torch import nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.trainers.base import Phase, Trainer

from test_trainer_base import ToyTrainer, ToyWaves


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
