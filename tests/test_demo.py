"""`audiolm demo` end to end on a tiny budget: it completes and writes every promised file (the PNG included:
matplotlib is an install requirement); every file its last line names exists; the audiolm.yaml it writes drives
`audiolm generate`. (How long it takes is a benchmark's business, not a test's.)"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

MINUTES = 0.2


def test_demo_writes_every_promised_file(tmp_path):
    from audiolm_pytorch.demo import OUTPUT_FILES
    out = tmp_path / 'demo'
    script = Path(sys.executable).with_name('audiolm')
    env = dict(os.environ, OMP_NUM_THREADS = '1')
    result = subprocess.run([str(script) if script.exists() else 'audiolm', 'demo', '--minutes', str(MINUTES),
                             '--out', str(out), '--no-progress', '--cpu'],
                            capture_output = True, text = True, env = env, timeout = 600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    named = re.findall(r'(\S+\.(?:md|png|wav|txt))', last)
    assert str(out / 'demo.png') in named, last            # the README promises the picture
    for path in named:
        assert Path(path).is_file(), f'the last line names {path}, which the demo did not write'

    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not (out / 'data').exists() and not (out / 'train').exists()      # scratch folders are removed

    prompt, rate = sf.read(str(out / 'prompt.wav'))
    assert rate == 16000 and len(prompt) == 16000
    recon, _ = sf.read(str(out / 'prompt_reconstruction.wav'))
    assert len(recon) == len(prompt)
    continuation, _ = sf.read(str(out / 'continuation.wav'))
    # the continuation starts with the prompt's frames (decoded by the codec) and adds at least one frame
    assert len(continuation) > len(prompt) and len(continuation) % 320 == 0
    unconditional, _ = sf.read(str(out / 'unconditional.wav'))
    assert len(unconditional) > 0 and np.isfinite(unconditional).all()
    assert (out / 'demo.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    report = (out / 'report.md').read_text()
    for stage in ('soundstream', 'tokenizer', 'semantic', 'coarse', 'fine', 'generate'):
        row = re.search(rf'^\| {stage} \| (\d+) \| ([\d.]+) \|', report, flags = re.M)
        assert row is not None and int(row.group(1)) >= 1, stage
    # the stages train on crops with file_end (no EOS at crop ends) and EOS starts rare: every draw reaches the
    # requested length, and the report says how many draws there were and how many ended early
    draws = re.search(r'^- generation draws: (\d+), ended early \(before the requested length\): (\d+)$', report,
                      flags = re.M)
    assert draws is not None and int(draws.group(1)) >= 2 and int(draws.group(2)) == 0, report[:1500]
    generate_row = re.search(r'^\| generate \| (\d+) \|.*\b(\d+) of (\d+) draw\(s\) ended early', report, flags = re.M)
    assert generate_row is not None and generate_row.group(2) == '0' and generate_row.group(3) == draws.group(1)
    assert len(continuation) == len(prompt) + len(unconditional)     # both asked the same new length, and got it
    assert re.search(r'total wall time: ([\d.]+) s', report)
    # the demo's codec has no discriminator (DEFAULT_CONFIG): its row lists no all-zero discriminator loss
    codec_row = next(line for line in report.splitlines() if line.startswith('| soundstream |'))
    assert 'gen_multi_spectral' in codec_row and 'discriminator' not in codec_row, codec_row
    assert '"soundstream"' in report and '"model"' in report          # the configs are in the report

    # the held-out prompt's reconstruction quality, recomputed here from the two wavs with the same metric code
    from audiolm_pytorch.codecs.metrics import log_mel_l1, si_sdr
    # the line's first figures are this run's (the former recipe's follow for comparison)
    line = re.search(r'^- held-out prompt through the codec.*?log-mel L1 ([\d.]+) .*?SI-SDR (-?[\d.]+) dB', report, flags = re.M)
    assert line is not None, report[:2000]
    assert float(line.group(1)) == pytest.approx(log_mel_l1(prompt, recon, rate), abs = 0.02)   # wavs are 16-bit
    assert float(line.group(2)) == pytest.approx(si_sdr(prompt, recon), abs = 0.1)

    # the written AudioLM config regenerates from the checkpoints (in-process: the entry point itself)
    from audiolm_pytorch.cli import main
    assert main(['generate', '--audiolm', str(out / 'audiolm.yaml'), '--prime', str(out / 'prompt.wav'),
                 '--out', str(tmp_path / 'again.wav'), '--max-length', '60', '--max-coarse-steps', '60',
                 '--device', 'cpu']) == 0
    again, rate = sf.read(str(tmp_path / 'again.wav'))
    assert rate == 16000 and len(again) >= 16000


def test_demo_plot_without_matplotlib_fails_clearly(tmp_path, monkeypatch):
    """matplotlib is an install requirement: a broken environment gets an error naming the fix, never a
    stand-in file in place of demo.png."""
    import sys as _sys
    from audiolm_pytorch import demo
    monkeypatch.setitem(_sys.modules, 'matplotlib', None)
    monkeypatch.setitem(_sys.modules, 'matplotlib.figure', None)
    with pytest.raises(ImportError, match = 'matplotlib'):
        demo._plot(tmp_path / 'demo.png', [], 16000, [], prompt_seconds = 1.)
    assert list(tmp_path.iterdir()) == []


def test_matplotlib_is_an_install_requirement():
    setup = (Path(__file__).resolve().parent.parent / 'setup.py').read_text()
    requires = setup[setup.index('install_requires'):setup.index('extras_require')]
    assert "'matplotlib'" in requires


def test_report_states_the_prompt_reconstruction_quality(tmp_path):
    from audiolm_pytorch.demo import RECONSTRUCTION_BEFORE, DemoResult, StageResult, _write_report
    result = DemoResult(tmp_path, [StageResult('soundstream', 1.0, 3)], 2.0, 60., 'cpu', [str(tmp_path / 'report.md')],
                        reconstruction = dict(log_mel_l1 = 0.8766, si_sdr = -3.21))
    _write_report(tmp_path / 'report.md', result, cfg = {})
    report = (tmp_path / 'report.md').read_text()
    line = next(line for line in report.splitlines() if line.startswith('- held-out prompt through the codec'))
    assert 'log-mel L1 0.877' in line and 'SI-SDR -3.21 dB' in line
    assert f'{RECONSTRUCTION_BEFORE["log_mel_l1"]:.2f}' in line                   # next to the figure before issue 13
    assert f'{RECONSTRUCTION_BEFORE["torch_init_log_mel_l1"]:.3f}' in line and \
        f'{RECONSTRUCTION_BEFORE["torch_init_si_sdr"]:.2f} dB' in line            # and the former init's, same machine
    assert f'{RECONSTRUCTION_BEFORE["discriminator_log_mel_l1"]:.3f}' in line and \
        f'{RECONSTRUCTION_BEFORE["discriminator_si_sdr"]:.2f} dB' in line         # and the former demo codec's
    assert f'{RECONSTRUCTION_BEFORE["conv_codec_log_mel_l1"]:.3f}' in line and \
        f'{RECONSTRUCTION_BEFORE["conv_codec_si_sdr"]:.2f} dB' in line            # and the waveform-conv codec's

    # without the measurement (e.g. an older caller) the report has no such line rather than a made-up value
    result.reconstruction = {}
    _write_report(tmp_path / 'report.md', result, cfg = {})
    assert 'held-out prompt through the codec' not in (tmp_path / 'report.md').read_text()


def test_demo_codec_trains_without_discriminators():
    """At the demo's budget the discriminator cost a third of each codec step and made the held-out reconstruction
    worse (benchmarks/RESULTS.md "The demo's codec"): the demo's SoundStream is built without one."""
    from audiolm_pytorch import SoundStream
    from audiolm_pytorch.demo_config import DEFAULT_CONFIG, TINY_SOUNDSTREAM
    assert not list(SoundStream(**DEFAULT_CONFIG['soundstream']['model']).discriminator_parameters())
    assert list(SoundStream(**TINY_SOUNDSTREAM).discriminator_parameters())        # the example scripts keep theirs


def test_demo_codec_reads_and_writes_spectra():
    """The demo's codec has the causal STFT front end and inverse-STFT head (benchmarks/RESULTS.md "A spectral
    front end and head for small codecs"); the example scripts' tiny codec stays convolutional."""
    from audiolm_pytorch import SoundStream
    from audiolm_pytorch.demo_config import DEFAULT_CONFIG, TINY_SOUNDSTREAM
    from audiolm_pytorch.nn.istft_head import CausalISTFTHead
    from audiolm_pytorch.nn.stft_front import CausalSTFTFront
    demo_codec = SoundStream(**DEFAULT_CONFIG['soundstream']['model'])
    assert isinstance(demo_codec.encoder[0], CausalSTFTFront) and isinstance(demo_codec.decoder[-1], CausalISTFTHead)
    assert demo_codec.downsample_factor == 320                                     # the stages' frame rate is unchanged
    example = SoundStream(**TINY_SOUNDSTREAM)
    assert not any(isinstance(m, (CausalSTFTFront, CausalISTFTHead)) for m in example.modules())


def test_loss_panel_goes_log_scale_when_values_span_decades():
    """The codec's waveform loss falls from ~9 to ~0.01 while its mel loss stays near 0.3: on a linear axis both
    flatten to lines, so such a panel gets a log y-axis; a language model's loss curve (3.7 -> 0.3) stays linear,
    and so does any panel with a value <= 0 (an adversarial loss)."""
    from matplotlib.figure import Figure
    from audiolm_pytorch.demo_report import _log_scale_if_wide
    recon = [(0, 9.0), *((step, 0.01 + 1 / step) for step in range(1, 200))]
    mel = [(step, 0.9 - step / 400) for step in range(200)]
    lm = [(step, 3.7 - step / 60) for step in range(200)]
    cases = (([recon, mel], 'log'), ([lm], 'linear'), ([recon, [(0, -0.5), (1, 0.2)]], 'linear'))
    for curves, scale in cases:
        ax = Figure().add_subplot()
        assert _log_scale_if_wide(ax, curves) == (scale == 'log')
        assert ax.get_yscale() == scale
