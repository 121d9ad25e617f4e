"""Two processes on CPU (gloo) through ``accelerate launch``: a transformer trainer and the SoundStream trainer.

The launched script is this file (``__main__`` below). Checks: every rank logs the same (all-reduced) losses and
ends with the same weights, checkpoints load, and two processes with batch 1 track one process with batch 2.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_trainer_soundstream import ASSETS, tiny_soundstream

pytestmark = pytest.mark.multiprocess

STEPS = 3


class FixedClips(torch.utils.data.Dataset):
    """Deterministic clips (no random crop), so any split of a global batch sees the same audio."""

    def __init__(self, length = 3200):
        from audiolm_pytorch.audio import load_audio
        self.waves = [load_audio(p, 16000, max_length = length).wave[0] for p in sorted(ASSETS.glob('*_16k.wav'))[:4]]

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, i):
        return self.waves[i]


def build(kind, results, batch_size):
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerTrainer, SoundStreamTrainer
    from test_trainer_transformers import TINY, spectral_tokenizer
    torch.manual_seed(0)
    common = dict(dataset = FixedClips(), batch_size = batch_size, num_train_steps = STEPS, valid_frac = 0.,
                  save_model_every = 2, save_results_every = 1000, results_folder = results, progress_bar = False,
                  force_clear_prev_results = True)
    if kind == 'semantic':
        wav2vec = spectral_tokenizer()
        torch.manual_seed(0)
        transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, attn_dropout = 0., **TINY)
        trainer = SemanticTransformerTrainer(transformer, wav2vec, **common)
        trainer.train_wrapper.mask_prob = 0.  # no random masking: the comparison is exact up to float reordering
        return trainer
    return SoundStreamTrainer(tiny_soundstream(), grad_accum_every = 1, ema_update_after_step = 0, ema_update_every = 1, **common)


def run(results):
    """Both trainers, one after the other, in the same launched processes (trainers coexist in a process)."""
    torch.set_num_threads(1)
    for kind in ('semantic', 'soundstream'):
        trainer = build(kind, Path(results) / kind, batch_size = 2 // trainer_processes())
        losses = [trainer.train_step()['loss'] for _ in range(STEPS)]
        checksum = sum(float(p.detach().double().sum()) for p in trainer.model.parameters())
        rank = trainer.accelerator.process_index
        from audiolm_pytorch.codecs.codebook_sync import codebooks
        synced = [bool(c.use_ddp) for c in codebooks(trainer.model)]   # the codec was built before the group
        (Path(results) / f'{kind}.rank{rank}.json').write_text(json.dumps(dict(losses = losses, checksum = checksum,
                                                                              synced_codebooks = synced)))


def trainer_processes():
    return int(os.environ.get('WORLD_SIZE', '1'))


@pytest.fixture(scope = 'module')
def two_process_run(tmp_path_factory):
    launcher = Path(sys.executable).with_name('accelerate')
    if not launcher.exists():
        pytest.skip('the accelerate launcher is not installed')
    results = tmp_path_factory.mktemp('two_processes')
    # `accelerate launch --cpu --num_processes 2` only spawns through mpirun; the torchrun launcher (--multi_gpu)
    # with ACCELERATE_USE_CPU gives the same MULTI_CPU (gloo) run without MPI
    env = dict(os.environ, OMP_NUM_THREADS = '1', ACCELERATE_USE_CPU = '1',
               PYTHONPATH = os.pathsep.join([str(Path(__file__).parent.parent), str(Path(__file__).parent)]))
    cmd = [str(launcher), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', str(29500 + os.getpid() % 1000),
           __file__, str(results)]
    proc = subprocess.run(cmd, env = env, capture_output = True, text = True, timeout = 300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results


@pytest.mark.parametrize('kind', ['semantic', 'soundstream'])
def test_two_processes_match_one(two_process_run, tmp_path, kind):
    results = two_process_run
    ranks = [json.loads((results / f'{kind}.rank{r}.json').read_text()) for r in range(2)]
    assert ranks[0]['losses'] == ranks[1]['losses'], 'all ranks log the same all-reduced losses'
    assert ranks[0]['checksum'] == pytest.approx(ranks[1]['checksum'], rel = 1e-6), 'replicas stay in sync'
    if kind == 'soundstream':   # the trainer switched on the all-reduce of every codebook's statistics
        assert ranks[0]['synced_codebooks'] and all(ranks[0]['synced_codebooks'])

    name = 'semantic.transformer' if kind == 'semantic' else 'soundstream'
    folder = results / kind
    assert sorted(p.name for p in folder.glob('*.pt')) == [f'{name}.0.pt', f'{name}.2.pt']
    pkg = torch.load(folder / f'{name}.2.pt', weights_only = True)
    assert len(pkg['trainer']['rng']) == 2 and pkg['trainer']['num_processes'] == 2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = build(kind, tmp_path / 'one', batch_size = 2)
        single_losses = [single.train_step()['loss'] for _ in range(STEPS)]
        resumed = build(kind, tmp_path / 'resumed', batch_size = 2)
        resumed.load(folder / f'{name}.2.pt')  # a 2-process checkpoint resumes in one process
        assert resumed.steps == 3
    finally:
        torch.set_num_threads(threads)
    if kind == 'semantic':
        # per-process token means averaged vs one token mean over the batch: equal up to length weighting
        assert single_losses == pytest.approx(ranks[0]['losses'], rel = 2e-2)
    else:
        # same weights and global batch at step 0, but the quantizer's data-dependent state (k-means init and EMA
        # codebooks from each process's local batch) legitimately differs from a one-process run: loose tolerance
        assert single_losses[0] == pytest.approx(ranks[0]['losses'][0], rel = 5e-2)
        assert all(torch.isfinite(torch.tensor(ranks[0]['losses'])))


if __name__ == '__main__':
    run(sys.argv[1])
