"""Two processes on CPU (gloo) through ``accelerate launch`` equal one process, step by step: the SoundStream
trainer (a GAN with two optimizers and EMA codebooks) and the semantic transformer trainer.

The launched script is this file (``__main__`` below). Each trainer runs ``STEPS`` optimizer steps with a global
batch of 2: two processes with batch 1 each, and (in the test process) one process with batch 2. Everything
random is switched off (no k-means init, no quantizer dropout or dead-code replacement, no forgetful causal
masking, equal-length items), and the optimizers are plain SGD without clipping: Adam's update is invariant to
the gradient's scale and clipping to its norm, so under AdamW a gradient *sum* across processes would look just
like the mean. What must hold then, up to float summation order (2e-6 of each tensor's scale):

* every rank logs the same losses and holds the same weights, EMA weights and codebook statistics;
* the semantic trainer's losses, weights and EMA weights equal the one-process run after every step;
* SoundStream's first update (weights, EMA weights, codebook cluster sizes and summed embeddings) equals the
  one-process run. Its later steps are held to a noise floor measured in the test: this tiny GAN with its
  quantizer amplifies float summation-order noise about 100x per step (a one-process run on 2 threads instead
  of 1 drifts just as far: 1e-6 after one step, 5e-5 after two, 5e-3 after three), so exact equality over
  several steps cannot hold for it in float32;
* a two-process checkpoint resumes in one process.

Checked against: the gradients multiplied by the number of processes before the update (a summed all-reduce)
fails both trainers at the first step; ``enable_codebook_sync`` made a no-op fails SoundStream (the replicas'
codebook statistics disagree).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ASSETS, tiny_soundstream

pytestmark = pytest.mark.multiprocess

STEPS = 3
LR = dict(semantic = 0.05, soundstream = 1e-4)   # SGD steps that move the weights without diverging
EXACT_QUANTIZER = dict(kmeans_init = False, quantize_dropout = False, threshold_ema_dead_code = 0)


class FixedClips(torch.utils.data.Dataset):
    """Deterministic clips of one length (no random crop), so any split of a global batch sees the same audio."""

    def __init__(self, length = 3200):
        from audiolm_pytorch.audio import load_audio
        self.waves = [load_audio(p, 16000, max_length = length).wave[0] for p in sorted(ASSETS.glob('*_16k.wav'))[:4]]

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, i):
        return self.waves[i]


def use_sgd(trainer, lr):
    """Swap each phase's AdamW (inside Accelerate's wrapper) for SGD: its update is linear in the gradient."""
    for phase in trainer._phases:
        phase.optimizer.optimizer = torch.optim.SGD(phase.params, lr = lr)
    return trainer


def build(kind, results, batch_size):
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerTrainer, SoundStreamTrainer
    from tests.helpers import TINY_LM, spectral_tokenizer
    torch.manual_seed(0)
    common = dict(dataset = FixedClips(), batch_size = batch_size, num_train_steps = STEPS, valid_frac = 0.,
                  save_model_every = 2, save_results_every = 1000, results_folder = results, progress_bar = False,
                  force_clear_prev_results = True, max_grad_norm = None, use_ema = True, ema_update_after_step = 0,
                  ema_update_every = 1)
    if kind == 'semantic':
        wav2vec = spectral_tokenizer()
        torch.manual_seed(0)
        transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, attn_dropout = 0., **TINY_LM)
        trainer = SemanticTransformerTrainer(transformer, wav2vec, **common)
        trainer.train_wrapper.mask_prob = 0.               # no forgetful causal masking
        trainer.train_wrapper.unique_consecutive = False  # equal token counts: a mean of per-process means is global
        return use_sgd(trainer, LR[kind])
    codec = tiny_soundstream(rq_kwargs = EXACT_QUANTIZER)
    return use_sgd(SoundStreamTrainer(codec, grad_accum_every = 1, **common), LR[kind])


def snapshot(trainer) -> dict:
    """Weights, EMA weights and every buffer (the codebook statistics among them), on CPU."""
    state = {f'model.{k}': v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}
    state.update({f'ema.{k}': v.detach().cpu().clone() for k, v in trainer.ema_model.state_dict().items()})
    return state


def train(trainer):
    """-> (state before, losses, [state after each step])."""
    before, losses, after = snapshot(trainer), [], []
    for _ in range(STEPS):
        losses.append(trainer.train_step()['loss'])
        after.append(snapshot(trainer))
    return before, losses, after


def run(results):
    """Both trainers, one after the other, in the same launched processes (trainers coexist in a process)."""
    from audiolm_pytorch.codecs.codebook_sync import codebooks
    torch.set_num_threads(1)
    # the codec first: built before any process group exists, its codebooks only sync because the trainer
    # switches the sync on (enable_codebook_sync)
    for kind in ('soundstream', 'semantic'):
        trainer = build(kind, Path(results) / kind, batch_size = 2 // trainer_processes())
        _, losses, after = train(trainer)          # the state after every step
        rank = trainer.accelerator.process_index
        synced = [bool(c.use_ddp) for c in codebooks(trainer.model)]
        torch.save(after, Path(results) / f'{kind}.rank{rank}.pt')
        (Path(results) / f'{kind}.rank{rank}.json').write_text(json.dumps(dict(losses = losses,
                                                                              synced_codebooks = synced)))


def trainer_processes():
    return int(os.environ.get('WORLD_SIZE', '1'))


@pytest.fixture(scope = 'module')
def two_process_run(tmp_path_factory):
    launcher = Path(sys.executable).with_name('accelerate')
    assert launcher.exists(), 'the accelerate launcher is installed with accelerate (an install requirement)'
    results = tmp_path_factory.mktemp('two_processes')
    # `accelerate launch --cpu --num_processes 2` only spawns through mpirun; the torchrun launcher (--multi_gpu)
    # with ACCELERATE_USE_CPU gives the same MULTI_CPU (gloo) run without MPI
    env = dict(os.environ, OMP_NUM_THREADS = '1', ACCELERATE_USE_CPU = '1',
               PYTHONPATH = str(Path(__file__).parents[2]))
    cmd = [str(launcher), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', str(29500 + os.getpid() % 1000),
           __file__, str(results)]
    proc = subprocess.run(cmd, env = env, capture_output = True, text = True, timeout = 600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results


def max_difference(a: dict, b: dict, prefix: str = '') -> tuple[float, str]:
    """The largest difference of any float tensor, relative to the tensor's scale (at least 1)."""
    worst, where = 0., ''
    for key in a:
        if key.startswith(prefix) and a[key].is_floating_point() and a[key].numel():
            scale = max(1., float(b[key].double().abs().max()))
            diff = float((a[key].double() - b[key].double()).abs().max()) / scale
            if diff > worst:
                worst, where = diff, key
    return worst, where


def one_process(kind, folder, threads = 1):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return train(build(kind, folder, batch_size = 2))
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize('kind', ['semantic', 'soundstream'])
def test_two_processes_equal_one_over_several_steps(two_process_run, tmp_path, kind):
    results = two_process_run
    ranks = [json.loads((results / f'{kind}.rank{r}.json').read_text()) for r in range(2)]
    states = [torch.load(results / f'{kind}.rank{r}.pt', weights_only = True) for r in range(2)]
    assert ranks[0]['losses'] == ranks[1]['losses'], 'all ranks log the same all-reduced losses'
    for step in range(STEPS):
        assert max_difference(states[0][step], states[1][step])[0] == 0., 'replicas (weights, EMA, codebooks) agree'
    if kind == 'soundstream':   # the trainer switched on the all-reduce of every codebook's statistics
        assert ranks[0]['synced_codebooks'] and all(ranks[0]['synced_codebooks'])

    before, single_losses, single = one_process(kind, tmp_path / 'one')
    assert single[0].keys() == states[0][0].keys()
    # the updates are far from vanishing: a summed all-reduce (twice the step) would be far outside 1e-6
    assert max_difference(single[0], before, prefix = 'model.')[0] > 1e-3

    # the first update: equal up to float summation order (SoundStream: up to the measured noise floor below)
    assert single_losses[0] == pytest.approx(ranks[0]['losses'][0], rel = 1e-6)
    worst, where = max_difference(states[0][0], single[0])
    tolerance = 2e-6
    if kind == 'soundstream':
        # a one-process run with 2 threads instead of 1: the same first step, summed in another order
        _, _, other_order = one_process(kind, tmp_path / 'threads', threads = 2)
        tolerance = 10 * max(max_difference(other_order[0], single[0])[0], 2e-6)
    assert worst <= tolerance, f'after the first step {where} differs by {worst:.2e} from the one-process run'

    if kind == 'semantic':
        # every later step too
        assert single_losses == pytest.approx(ranks[0]['losses'], rel = 1e-6)
        for step in range(1, STEPS):
            worst, where = max_difference(states[0][step], single[step])
            assert worst <= 2e-6, f'after step {step} {where} differs by {worst:.2e} from the one-process run'
        return

    # SoundStream: the codebook statistics (cluster sizes, summed embeddings) of the first update are the global ones
    stats = [k for k in single[0] if k.startswith('model.') and ('cluster_size' in k or 'embed_avg' in k)]
    assert stats and all(not torch.equal(single[0][k], before[k]) for k in stats)   # EMA statistics did update
    for k in stats:
        torch.testing.assert_close(states[0][0][k], single[0][k], rtol = 1e-6, atol = 1e-6, msg = k)
    # Later steps: this tiny GAN with its quantizer amplifies float summation-order noise ~100x per step (a
    # one-process run with 2 threads instead of 1 drifts as far), so they are held to that measured noise floor
    for step in range(1, STEPS):
        floor = max(max_difference(other_order[step], single[step])[0], 2e-6)
        worst, where = max_difference(states[0][step], single[step])
        assert worst <= 10 * floor, f'after step {step} {where} differs by {worst:.2e} (noise floor {floor:.2e})'


@pytest.mark.parametrize('kind', ['semantic', 'soundstream'])
def test_two_process_checkpoints_resume_in_one_process(two_process_run, tmp_path, kind):
    name = 'semantic.transformer' if kind == 'semantic' else 'soundstream'
    folder = two_process_run / kind
    assert sorted(p.name for p in folder.glob('*.pt')) == [f'{name}.0.pt', f'{name}.2.pt']
    pkg = torch.load(folder / f'{name}.2.pt', weights_only = True)
    assert len(pkg['trainer']['rng']) == 2 and pkg['trainer']['num_processes'] == 2
    resumed = build(kind, tmp_path / 'resumed', batch_size = 2)
    resumed.load(folder / f'{name}.2.pt')
    assert resumed.steps == 3


if __name__ == '__main__':
    run(sys.argv[1])
