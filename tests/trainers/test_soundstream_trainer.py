"""SoundStreamTrainer on real clips: checkpoints / samples with the established names, EMA-preferring loads,
and exact resume after a SIGKILL (the training runs in a subprocess started from this file)."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import sixteen_k_folder, tiny_soundstream, write_bad_files


def make_trainer(results, folder, **kwargs):
    from audiolm_pytorch import SoundStreamTrainer
    torch.manual_seed(0)
    config = dict(folder = folder, batch_size = 2, data_max_length = 1600, num_train_steps = 5, grad_accum_every = 1,
                  results_folder = results, save_model_every = 1000, save_results_every = 1000, progress_bar = False,
                  ema_update_after_step = 1, ema_update_every = 1, apply_grad_penalty_every = 2)
    return SoundStreamTrainer(tiny_soundstream(), **{**config, **kwargs})


def test_trains_writes_checkpoints_and_samples_and_loads(tmp_path):
    from audiolm_pytorch import SoundStream
    trainer = make_trainer(tmp_path / 'results', sixteen_k_folder(tmp_path), num_train_steps = 3, save_model_every = 2,
                           save_results_every = 2)
    logs = []
    trainer.train(log_fn = logs.append)
    assert len(logs) == 3 and all(torch.isfinite(torch.tensor(l['generator'])) for l in logs)
    assert {'discriminator', 'gen_recon', 'generator_grad_norm', 'discriminator_grad_norm'} <= set(logs[0])
    assert 'grad_penalty' in logs[0] and 'grad_penalty' not in logs[1]

    results = tmp_path / 'results'
    assert sorted(p.name for p in results.glob('*.pt')) == ['soundstream.0.pt', 'soundstream.2.pt']
    for step in (0, 2):
        for name in ('original', 'recon', 'recon_ema'):
            assert (results / 'samples' / f'soundstream.{step}.{name}.wav').is_file()
        assert (results / 'samples' / f'soundstream.{step}.mel.png').is_file()

    pkg = torch.load(results / 'soundstream.2.pt', weights_only = True)
    assert set(pkg['ema_model']) == set(pkg['model'])
    assert set(pkg['trainer']['optimizers']) == {'generator', 'discriminator'} and pkg['trainer']['step'] == 3

    rebuilt = SoundStream.init_and_load_from(results / 'soundstream.2.pt')
    ema = trainer.ema_model.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in rebuilt.state_dict().items()), 'EMA weights are preferred'
    online = tiny_soundstream()
    online.load(results / 'soundstream.2.pt', prefer_ema = False)
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in online.state_dict().items())
    # the online and EMA weights really differ (the EMA was updated with beta < 1)
    assert any(not torch.equal(v, ema[k]) for k, v in trainer.model.state_dict().items() if v.is_floating_point())


def _child(results, folder, steps):
    """Training run killed by the test: prints one loss per line."""
    torch.set_num_threads(1)
    trainer = make_trainer(results, folder, num_train_steps = steps, save_model_every = 2)
    for _ in range(steps):
        print('LOSS', json.dumps(trainer.train_step()['loss']), flush = True)


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    folder = sixteen_k_folder(tmp_path)
    killed = tmp_path / 'killed'
    env = dict(os.environ, OMP_NUM_THREADS = '1', PYTHONPATH = str(Path(__file__).parents[2]))
    stderr = open(tmp_path / 'child.stderr', 'w')
    proc = subprocess.Popen([sys.executable, __file__, str(killed), str(folder), '1000'], env = env,
                            stdout = subprocess.PIPE, stderr = stderr, text = True)
    child_losses = []
    try:
        # kill once the step-2 checkpoint is on disk AND three losses were printed: the checkpoint is written inside
        # the third step, before its loss line, so waiting on the file alone races the print on a fast machine
        deadline = time.time() + 150
        while len(child_losses) < 3 or not (killed / 'soundstream.2.pt').exists():
            assert proc.poll() is None, 'the training subprocess died: ' + (tmp_path / 'child.stderr').read_text()[-2000:]
            assert time.time() < deadline, 'no checkpoint within the time limit'
            if len(child_losses) < 3:
                line = proc.stdout.readline()   # the child prints a line per step until it is killed
                if line.startswith('LOSS '):
                    child_losses.append(json.loads(line.split()[1]))
            else:
                time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout = 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr.close()
    assert proc.returncode == -signal.SIGKILL
    child_losses += [json.loads(line.split()[1]) for line in proc.stdout.read().splitlines() if line.startswith('LOSS ')]
    assert len(child_losses) >= 3

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = make_trainer(tmp_path / 'reference', folder)
        expected = [reference.train_step()['loss'] for _ in range(5)]
        assert child_losses[:3] == expected[:3], 'the subprocess and this process must train identically'

        resumed = make_trainer(killed, folder, force_clear_prev_results = False)
        resumed.load(killed / 'soundstream.2.pt')
        assert resumed.steps == 3
        assert [resumed.train_step()['loss'] for _ in range(2)] == expected[3:]
    finally:
        torch.set_num_threads(threads)

    assert not [p for p in killed.iterdir() if p.name.endswith('.tmp')], 'no partial checkpoint is left behind'
    for path in killed.glob('*.pt'):
        torch.load(path, weights_only = True)


if __name__ == '__main__':
    _child(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))


def test_codec_without_discriminators_trains_with_one_optimizer(tmp_path):
    from audiolm_pytorch import SoundStreamTrainer
    torch.manual_seed(0)
    codec = tiny_soundstream(stft_discriminator = False)
    assert not list(codec.discriminator_parameters())
    trainer = SoundStreamTrainer(codec, folder = sixteen_k_folder(tmp_path, count = 2), batch_size = 2,
                                 data_max_length = 1600, num_train_steps = 2, grad_accum_every = 1,
                                 results_folder = tmp_path / 'results', save_model_every = 1000,
                                 save_results_every = 1000, progress_bar = False)
    logs = []
    trainer.train(log_fn = logs.append)
    assert len(logs) == 2 and 'discriminator_grad_norm' not in logs[0]
    assert all(torch.isfinite(torch.tensor(log['generator'])) for log in logs)


# ---- bad data at construction, batches larger than the dataset -----------------------------------------------------

def tiny_trainer(tmp_path, folder, **kwargs):
    from audiolm_pytorch import SoundStreamTrainer
    from tests.helpers import tiny_soundstream
    config = dict(folder = folder, batch_size = 2, data_max_length = 800, num_train_steps = 1, grad_accum_every = 1,
                  results_folder = tmp_path / 'results', save_model_every = 1000, save_results_every = 1000,
                  progress_bar = False, force_clear_prev_results = False)
    return SoundStreamTrainer(tiny_soundstream(), **{**config, **kwargs})


def test_trainer_constructor_bad_data(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match = 'no audio files'):
        tiny_trainer(tmp_path, tmp_path / 'empty')
    write_bad_files(tmp_path / 'audio')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match = 'shorter than seq_len_multiple_of'):
            tiny_trainer(tmp_path, tmp_path / 'audio', data_max_length = 4)   # hop of the tiny codec: 8
        with pytest.raises(ValueError, match = 'batch_size'):
            tiny_trainer(tmp_path, tmp_path / 'audio', batch_size = 0)


def test_trainer_batch_larger_than_dataset_wraps_around(tmp_path):
    # one usable file, batch of 4: the batch stream wraps around the dataset (documented), nothing crashes
    write_bad_files(tmp_path / 'audio')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        trainer = tiny_trainer(tmp_path, tmp_path / 'audio', batch_size = 4, valid_frac = 0.)
        logs = []
        trainer.train(log_fn = logs.append)
    assert len(logs) == 1 and np.isfinite(logs[0]['generator'])
