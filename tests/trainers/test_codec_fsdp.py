"""SoundStream's training step (generator + discriminators) under FSDP2 (``fully_shard``), 2 CPU processes (gloo).

Both processes run this file (``__main__`` below), each on its half of a fixed global batch, through the trainer's
step: one ``return_all_losses`` pass, one backward of generator + discriminator loss, an SGD step for each
optimizer. Two FSDP layouts: 'root' (encoder and decoder are FSDP units, the discriminators sit in the root unit)
and 'units' (every discriminator is an FSDP unit of its own too, as a size-based auto-wrap policy would make it).

Checks, per run: every parameter really is sharded; losses finite; no complex parameter, gradient or buffer; the
gathered weights and the quantizer's buffers identical on both processes; adding the generator loss to the
backward leaves the discriminators' gradients unchanged. With the "exact" quantizer (no k-means init, no quantizer
dropout, no dead-code replacement: nothing random or process-local; the EMA codebook statistics are all-reduced):
  * first-step gradients equal the mean of the one-process, unsharded gradients of the two half batches
    (fp32 and bf16 autocast; what data parallelism must compute, and it is tight);
  * fp32: later losses, parameters and codebooks follow a one-process run on the whole global batch (looser: the
    log-mel term of the spectral loss amplifies float32 rounding, so half vs whole batch differ at ~1e-3 relative
    in the encoder gradients, in any process layout).
The default quantizer (k-means init, dropout, dead codes: collectives inside the forward) runs under bf16.

Fixed here, kept as checks: ``soundstream._frozen`` once swapped in detached parameters, which FSDP2's pre-forward
hook of a discriminator unit undid (the generator's losses then trained the discriminators, silently); a codec
built before ``init_process_group`` (what ``SoundStreamTrainer`` users do) got vector-quantize-pytorch's
``sync_codebook=False`` from its process-wide cached ``is_distributed()``, so, FSDP broadcasting no buffers, its
EMA codebooks drifted apart: ``enable_codebook_sync`` (called by the trainer) switches the sync on afterwards.

Formerly a known failure (``xfail(strict=True)`` until issue 13): the gradient penalty (a double backward inside
the forward) with discriminators as FSDP units of their own: FSDP2 freed a unit's unsharded parameters after the
inner ``autograd.grad`` and the outer backward failed. Since the discriminators are weight-normalised by default
(``discr_weight_norm=True``: their conv weights are recomputed from ``g`` and ``v`` at every forward) the
'fp32_units_penalty' variant passes; with ``discr_weight_norm=False`` keep the discriminators in the root FSDP
unit (the 'root' layout) when the penalty is on.
"""

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

pytestmark = pytest.mark.multiprocess

WORLD = 2
STEPS = 2
TIMEOUT_S = 240

class Variant(NamedTuple):
    layout: str                 # 'root' or 'units' (see the module docstring)
    exact: bool                 # quantizer without k-means init, dropout and dead-code replacement
    bf16: bool                  # bf16 autocast
    penalty: bool               # one more discriminator step with the gradient penalty
    built_early: bool = False   # codec built before init_process_group (as SoundStreamTrainer users do)


VARIANTS = dict(
    fp32_root = Variant('root', exact = True, bf16 = False, penalty = True),
    fp32_units = Variant('units', exact = True, bf16 = False, penalty = False),
    bf16_root = Variant('root', exact = True, bf16 = True, penalty = True),
    bf16_units = Variant('units', exact = True, bf16 = True, penalty = False),
    bf16_root_default_quantizer = Variant('root', exact = False, bf16 = True, penalty = True),
    fp32_root_built_before_process_group = Variant('root', exact = False, bf16 = False, penalty = False,
                                                   built_early = True),
    fp32_units_penalty = Variant('units', exact = True, bf16 = False, penalty = True),
)
PENALTY_DOUBLE_BACKWARD = 'FSDP2 frees the unsharded params of a unit after the inner autograd.grad of the penalty'


def xfail_units(name):
    # the penalty with discriminator units failed (PENALTY_DOUBLE_BACKWARD) before discriminators were
    # weight-normalised by default; it passes now
    return name


def tiny_codec(exact: bool, sync: bool | None = None):
    """sync: vector-quantize-pytorch's ``sync_codebook`` (all-reduce of the codebook statistics); None leaves it to
    the library, which decides from whether a process group exists when the first quantizer of the process is built
    (cached for the whole process)."""
    from audiolm_pytorch import SoundStream
    torch.manual_seed(0)
    rq_kwargs = dict(kmeans_init = False, quantize_dropout = False, threshold_ema_dead_code = 0) if exact else {}
    if sync is not None:
        rq_kwargs['sync_codebook'] = sync
    return SoundStream(codebook_size = 32, rq_num_quantizers = 2, channels = 4, strides = (2, 4),
                       channel_mults = (2, 4), codebook_dim = 8, attn_window_size = 16, attn_depth = 1,
                       attn_heads = 2, attn_dim_head = 8, use_local_attn = True,
                       multi_spectral_window_powers_of_two = (6, 7), multi_spectral_n_mels = 8,
                       discr_multi_scales = (1, 0.5), multi_scale_discr_kwargs = dict(channels = 4, layers = 2),
                       stft_discriminator = dict(channels = 4, strides = ((1, 2), (2, 2)), channel_mults = (1, 2),
                                                 n_fft = 128, hop_length = 32, win_length = 128),
                       rq_kwargs = rq_kwargs)


def global_batch():
    """(2, 1, 1024): two tones plus noise, the same in every process."""
    t = torch.arange(1024) / 16000
    tones = torch.stack([torch.sin(2 * torch.pi * f * t) for f in (220., 440.)])[:, None]
    return 0.3 * tones + 0.05 * torch.randn(2, 1, 1024, generator = torch.Generator().manual_seed(1))


def full(t):
    """Full (unsharded) value of a parameter / gradient; a collective for DTensors: call it on every rank alike."""
    from torch.distributed.tensor import DTensor
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def train(model, waves, *, bf16: bool, penalty: bool, steps: int = STEPS) -> dict:
    """Trainer-style steps (+ one discriminator step with the gradient penalty). Returns losses, first-step
    gradients, final parameters and buffers, and how much the generator loss changes the discriminators' gradient."""
    discr_params = model.discriminator_parameters()
    opt_gen = torch.optim.SGD(model.non_discr_parameters(), lr = 1e-2)
    opt_discr = torch.optim.SGD(discr_params, lr = 1e-2)
    autocast = lambda: torch.autocast('cpu', dtype = torch.bfloat16, enabled = bf16)
    result = dict(losses = [], complex_grads = [])
    for step in range(steps):
        with autocast():
            out = model(waves, return_all_losses = True)
        (out.generator + out.discriminator).backward()
        result['losses'].append((out.generator.item(), out.discriminator.item(), *(v.item() for v in out.breakdown)))
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        result['complex_grads'] += [n for n, g in grads.items() if g.is_complex()]
        if step == 0:
            result['first_grads'] = {n: full(g) for n, g in grads.items()}
        opt_gen.step(), opt_discr.step()
        opt_gen.zero_grad(), opt_discr.zero_grad()
    if penalty:
        with autocast():
            loss = model(waves, return_discr_loss = True, apply_grad_penalty = True)
        loss.backward()
        result['penalty_loss'] = loss.item()
        result['penalty_grads'] = {n: full(p.grad) for n, p in model.named_parameters() if p.grad is not None}
        opt_discr.step()
        opt_discr.zero_grad()
    result['params'] = {n: full(p) for n, p in model.named_parameters()}
    result['buffers'] = {n: b.detach().clone() for n, b in model.named_buffers()}
    result['complex'] = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_complex()]
    # the generator loss must not change the discriminators' gradient: backward of the discriminator loss alone,
    # then of generator + discriminator loss (the quantizer in eval: the two passes see the same codebooks)
    model.rq.eval()
    discr_grads = []
    for with_generator in (False, True):
        with autocast():
            out = model(waves, return_all_losses = True)
        (out.discriminator + out.generator * with_generator).backward()
        discr_grads.append([full(p.grad) for p in discr_params])
        opt_gen.zero_grad(), opt_discr.zero_grad()
    result['discr_grad_from_generator'] = max((b - a).abs().max().item() for a, b in zip(*discr_grads))
    return result


def shard(model, layout: str):
    from torch.distributed.fsdp import fully_shard
    units = [model.encoder, model.decoder]
    if layout == 'units':
        units += [*model.discriminators.discriminators, model.stft_discriminator]
    for unit in units:
        fully_shard(unit)
    fully_shard(model)


def worker(rank: int, store: str, out: str):
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard
    torch.set_num_threads(1)
    early = {name: tiny_codec(v.exact) for name, v in VARIANTS.items() if v.built_early}
    dist.init_process_group('gloo', init_method = f'file://{store}', rank = rank, world_size = WORLD,
                            timeout = timedelta(seconds = TIMEOUT_S // 2))
    try:
        waves = global_batch().chunk(WORLD)[rank]
        from audiolm_pytorch.codecs.codebook_sync import enable_codebook_sync
        for name, v in VARIANTS.items():
            model = early[name] if v.built_early else tiny_codec(v.exact, sync = True)
            # what SoundStreamTrainer does once the process group exists; a codec whose config fixes
            # sync_codebook is left alone
            switched = enable_codebook_sync(model)
            shard(model, v.layout)
            sharded = all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in model.parameters())
            try:
                result = train(model, waves, bf16 = v.bf16, penalty = v.penalty)
            except RuntimeError as error:  # deterministic, hence the same on both ranks (no collective left hanging)
                result = dict(error = f'{type(error).__name__}: {error}')
            torch.save(dict(result, all_sharded = sharded, switched = switched), Path(out) / f'{name}.rank{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope = 'module')
def fsdp_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp('fsdp')
    paths = [str(Path(__file__).parents[2]), *filter(None, [os.environ.get('PYTHONPATH')])]
    env = dict(os.environ, OMP_NUM_THREADS = '1', PYTHONPATH = os.pathsep.join(paths))
    logs = [folder / f'rank{rank}.log' for rank in range(WORLD)]
    procs = []
    for rank, log in enumerate(logs):
        with open(log, 'w') as out:
            procs.append(subprocess.Popen([sys.executable, __file__, str(rank), str(folder / 'store'), str(folder)],
                                          env = env, stdout = out, stderr = subprocess.STDOUT))
    # wait for all; if one process fails, stop the other at once (it would wait for its peer until the timeout)
    deadline = time.monotonic() + TIMEOUT_S
    while any(proc.poll() is None for proc in procs):
        if time.monotonic() > deadline or any(proc.poll() not in (None, 0) for proc in procs):
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            for proc in procs:
                proc.wait()
            break
        time.sleep(0.1)
    for proc, log in zip(procs, logs):
        tail = log.read_text()[-4000:]
        assert proc.returncode == 0, f'a rank exited with {proc.returncode} (timeout {TIMEOUT_S} s):\n{tail}'
    return {name: [torch.load(folder / f'{name}.rank{r}.pt', weights_only = True) for r in range(WORLD)]
            for name in VARIANTS}


@pytest.fixture(scope = 'module')
def references():
    """One process, no FSDP: {(bf16, 'halves')}: each half batch from the initial weights (one step);
    {(False, 'whole', penalty)}: the whole global batch, like the FSDP runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        waves = global_batch()
        refs = {(bf16, 'halves'): [train(tiny_codec(exact = True), half, bf16 = bf16, penalty = False, steps = 1)
                                   for half in waves.chunk(WORLD)] for bf16 in (False, True)}
        refs.update({(False, 'whole', penalty): train(tiny_codec(exact = True), waves, bf16 = False, penalty = penalty)
                     for penalty in (False, True)})
        return refs
    finally:
        torch.set_num_threads(threads)


def ok_ranks(fsdp_runs, name):
    ranks = fsdp_runs[name]
    assert 'error' not in ranks[0], ranks[0].get('error')
    return ranks


def assert_close_dicts(actual, expected, what, rtol, atol):
    assert actual.keys() == expected.keys(), what
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol = rtol, atol = atol, msg = lambda m: f'{what} {key}: {m}')


def identical_replicas_param(name):
    return xfail_units(name) if VARIANTS[name].penalty else name


@pytest.mark.parametrize('name', [identical_replicas_param(n) for n in VARIANTS])
def test_runs_sharded_finite_real_and_replicas_identical(fsdp_runs, name):
    ranks = ok_ranks(fsdp_runs, name)
    for result in ranks:
        # 2 quantizer levels switched on when the codec was built before the group; explicit sync_codebook: left alone
        assert result['switched'] == (2 if VARIANTS[name].built_early else 0)
        assert result['all_sharded'], 'every parameter is a DTensor sharded on dim 0 over both processes'
        assert result['complex'] == [] and result['complex_grads'] == []
        assert torch.isfinite(torch.tensor(result['losses'])).all()
        assert set(result['first_grads']) == set(result['params']), 'every parameter gets a gradient'
    if VARIANTS[name].penalty:
        assert torch.isfinite(torch.tensor([r['penalty_loss'] for r in ranks])).all()
    # gathered weights and the (per-process, unsharded) quantizer buffers are identical on every process
    assert_close_dicts(ranks[1]['params'], ranks[0]['params'], 'params', rtol = 0, atol = 0)
    assert_close_dicts(ranks[1]['buffers'], ranks[0]['buffers'], 'buffers', rtol = 0, atol = 0)


@pytest.mark.parametrize('name', [xfail_units(n) for n in VARIANTS])
def test_generator_loss_leaves_discriminator_gradients_unchanged(fsdp_runs, name):
    assert ok_ranks(fsdp_runs, name)[0]['discr_grad_from_generator'] == 0.


@pytest.mark.parametrize('name', [xfail_units(n) for n, v in VARIANTS.items() if v.exact])
def test_first_step_is_the_mean_of_the_half_batch_steps(fsdp_runs, references, name):
    """Same weights, each process's half: exactly what the unsharded codec computes on that half; the gradient
    FSDP reduce-scatters is the mean of the two half-batch gradients."""
    ranks, bf16 = ok_ranks(fsdp_runs, name), VARIANTS[name].bf16
    halves = references[(bf16, 'halves')]
    for result, half in zip(ranks, halves):
        assert result['losses'][0] == pytest.approx(half['losses'][0], rel = 1e-6, abs = 1e-7)
    mean_grads = {k: (halves[0]['first_grads'][k] + halves[1]['first_grads'][k]) / 2 for k in halves[0]['first_grads']}
    assert_close_dicts(ranks[0]['first_grads'], mean_grads, 'first-step gradient', rtol = 1e-5, atol = 1e-8)


@pytest.mark.parametrize('name', [xfail_units(n) for n, v in VARIANTS.items() if v.exact and not v.bf16])
def test_fp32_training_follows_one_process_on_the_whole_batch(fsdp_runs, references, name):
    penalty = VARIANTS[name].penalty
    reference, ranks = references[(False, 'whole', penalty)], ok_ranks(fsdp_runs, name)
    # losses are batch means: the mean of the half-batch losses is the whole-batch loss
    per_rank = torch.tensor([r['losses'] for r in ranks]).double().mean(dim = 0)
    torch.testing.assert_close(per_rank, torch.tensor(reference['losses']).double(), rtol = 1e-3, atol = 1e-6)
    assert_close_dicts(ranks[0]['params'], reference['params'], 'parameter after the steps', rtol = 1e-3, atol = 1e-5)
    # EMA codebooks: vector-quantize-pytorch all-reduces the statistics, so they follow the whole-batch run
    assert_close_dicts(ranks[0]['buffers'], reference['buffers'], 'buffer after the steps', rtol = 1e-3, atol = 1e-3)
    if penalty:
        assert sum(r['penalty_loss'] for r in ranks) / WORLD == pytest.approx(reference['penalty_loss'], rel = 1e-3)
        assert_close_dicts(ranks[0]['penalty_grads'], reference['penalty_grads'], 'gradient-penalty step gradient',
                           rtol = 1e-3, atol = 1e-5)


if __name__ == '__main__':
    worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
