"""What ``audiolm demo`` writes besides audio and checkpoints: ``demo.png`` (log-mel spectrograms of the prompt
and the generations, loss curves per stage) and ``report.md`` (configs, steps, losses, times), from the per-stage
results (``StageResult``) of one run (``DemoResult``)."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

from audiolm_pytorch.demo_config import (BUDGET_SHARES, DEFAULT_MINUTES, PROMPT_CLIP, PROMPT_SECONDS,
                                         RECONSTRUCTION_BEFORE, TRAIN_CLIPS)

__all__ = ['StageResult', 'DemoResult', 'plot_demo', 'write_report']


@dataclass
class StageResult:
    name: str
    seconds: float
    steps: int = 0
    losses: dict = field(default_factory = dict)       # curve name -> [(step, value)]
    notes: str = ''
    extra: dict = field(default_factory = dict)        # stage-specific counts (generate: draws, ended_early)

    def summary(self, key: str) -> tuple[float, float] | None:
        """(first, mean of the last 10% of steps) of a loss curve."""
        curve = self.losses.get(key)
        if not curve:
            return None
        tail = [value for _, value in curve[-max(1, len(curve) // 10):]]
        return curve[0][1], sum(tail) / len(tail)


@dataclass
class DemoResult:
    out_dir: Path
    stages: list
    total_seconds: float
    budget_seconds: float
    device: str
    files: list
    reconstruction: dict = field(default_factory = dict)   # held-out prompt through the codec: log_mel_l1, si_sdr


def _spectrogram(wave, sample_hz: int):
    import torch
    from audiolm_pytorch.audio import MelSpectrogram
    mel = MelSpectrogram(sample_hz = sample_hz, n_fft = 1024, hop_length = 160, n_mels = 64, log = True)
    wave = torch.nn.functional.pad(wave.float(), (0, max(0, 1024 - wave.numel())))
    return mel(wave).numpy()


def _log_scale_if_wide(ax, curves, ratio: float = 20.) -> bool:
    """Log y-axis for a panel whose positive values span more than ``ratio`` (the codec's waveform loss starts near
    10 and ends near 0.01 while its mel loss stays near 0.3: on a linear axis the curves flatten to lines)."""
    values = [v for curve in curves for _, v in curve]
    if not values or min(values) <= 0 or max(values) <= ratio * min(values):
        return False
    ax.set_yscale('log')
    return True


def _plot(path: Path, waves, sample_hz: int, stages, prompt_seconds: float):
    try:
        from matplotlib.figure import Figure   # no pyplot: no global backend or figure state is touched
    except ImportError as error:   # an install requirement: only a broken environment lacks it
        raise ImportError('audiolm demo draws demo.png with matplotlib, an install requirement of audiolm-pytorch: '
                          'reinstall the package (pip install -e .) or pip install matplotlib') from error
    curves = [(stage.name, key, curve) for stage in stages for key, curve in stage.losses.items()
              if stage.name != 'tokenizer' and key != 'discriminator']
    fig = Figure(figsize = (10, 2 + 1.75 * len(waves)))
    grid = fig.add_gridspec(len(waves) + 1, 4, height_ratios = [1] * len(waves) + [1.1])
    for row, (title, wave) in enumerate(waves):
        ax = fig.add_subplot(grid[row, :])
        spec = _spectrogram(wave, sample_hz)
        seconds = wave.numel() / sample_hz
        ax.imshow(spec, origin = 'lower', aspect = 'auto', interpolation = 'nearest', extent = (0, seconds, 0, spec.shape[0]))
        if title.startswith('continuation'):
            ax.axvline(prompt_seconds, color = 'white', linestyle = '--', linewidth = 1)
        ax.set_title(f'{title}: log-mel spectrogram', fontsize = 9)
        ax.set_ylabel('mel bin', fontsize = 8)
        ax.set_xlabel('seconds', fontsize = 8)
    stage_names = ['soundstream', 'semantic', 'coarse', 'fine']
    for col, stage_name in enumerate(stage_names):
        ax = fig.add_subplot(grid[len(waves), col])
        stage_curves = [curve for name, key, curve in curves if name == stage_name]
        for name, key, curve in curves:
            if name != stage_name:
                continue
            steps, values = zip(*curve)
            ax.plot(steps, values, label = key, linewidth = 1, marker = 'o' if len(steps) < 20 else None, markersize = 2)
        _log_scale_if_wide(ax, stage_curves)
        ax.set_title(f'{stage_name} loss', fontsize = 9)
        ax.set_xlabel('step', fontsize = 8)
        ax.tick_params(labelsize = 7)
        if ax.lines:
            ax.legend(fontsize = 6)
    fig.tight_layout()
    fig.savefig(path, dpi = 90)


def _format_loss(stage: StageResult) -> str:
    parts = []
    for key in stage.losses:
        summary = stage.summary(key)
        if summary is not None:
            parts.append(f'{key} {summary[0]:.3f} → {summary[1]:.3f}')
    return '; '.join(parts) or '-'


def _reconstruction_lines(metrics: dict) -> list[str]:
    if not metrics:
        return []
    before = RECONSTRUCTION_BEFORE
    return [f'- held-out prompt through the codec (tokenize -> decode): log-mel L1 {metrics["log_mel_l1"]:.3f} '
            f'(0 = perfect), SI-SDR {metrics["si_sdr"]:.2f} dB (higher is better). For comparison, at the default '
            f'{DEFAULT_MINUTES:g}-minute budget on a 2-core CPU: the codec recipe before issue 13 scored log-mel L1 '
            f'{before["log_mel_l1"]:.2f}; with the former conv init (`conv_init=\'torch_default\'`) '
            f'{before["torch_init_log_mel_l1"]:.3f}, SI-SDR {before["torch_init_si_sdr"]:.2f} dB; with the STFT '
            f'discriminator {before["discriminator_log_mel_l1"]:.3f}, SI-SDR {before["discriminator_si_sdr"]:.2f} dB; '
            f'the waveform-conv codec without the spectral front end and head {before["conv_codec_log_mel_l1"]:.3f}, '
            f'SI-SDR {before["conv_codec_si_sdr"]:.2f} dB (the current codec\'s inverse-STFT head draws its own phases, so '
            f'its waveform lines up less with the prompt while its spectrogram follows the prompt more closely). '
            f'Metrics: `audiolm_pytorch/codecs/metrics.py`']


def _write_report(path: Path, result: DemoResult, cfg: dict):
    import torch
    from audiolm_pytorch.version import __version__
    lines = [
        '# audiolm demo report', '',
        f'- library: audiolm_pytorch {__version__}, torch {torch.__version__}, python {platform.python_version()}',
        f'- device: {result.device}',
        f'- budget: {result.budget_seconds:.0f} s; total wall time: {result.total_seconds:.1f} s',
        f'- training clips: {", ".join(TRAIN_CLIPS)} (random crops; EOS trained only where a crop ends its file); '
        f'held-out prompt: first {PROMPT_SECONDS:g} s of {PROMPT_CLIP}',
        *_reconstruction_lines(result.reconstruction),
    ]
    generate = next((stage for stage in result.stages if stage.name == 'generate'), None)
    if generate is not None and 'draws' in generate.extra:
        lines.append(f'- generation draws: {generate.extra["draws"]}, ended early (before the requested length): '
                     f'{generate.extra["ended_early"]}')
    lines += [
        '', '## Stages', '',
        '| stage | steps | seconds | loss (first → mean of last 10% of steps) | notes |',
        '|---|---:|---:|---|---|',
    ]
    for stage in result.stages:
        lines.append(f'| {stage.name} | {stage.steps} | {stage.seconds:.1f} | {_format_loss(stage)} | {stage.notes} |')
    lines += ['', 'The models are tiny and trained for minutes on three clips: the generations show that every '
              'stage runs end to end, not what a trained AudioLM sounds like.', '',
              '## Files', '']
    for file in result.files:
        lines.append(f'- `{Path(file).relative_to(result.out_dir).as_posix()}`')
    lines += ['', 'Generate again from the checkpoints: `audiolm generate --audiolm '
              f'{result.out_dir / "audiolm.yaml"} --prime {result.out_dir / "prompt.wav"} --out again.wav`', '',
              '## Configs', '', '```json', json.dumps(cfg, indent = 2), '```', '',
              f'Budget shares: `{json.dumps(BUDGET_SHARES)}`', '']
    path.write_text('\n'.join(lines), encoding = 'utf-8')


plot_demo, write_report = _plot, _write_report
