"""What a trainer writes besides checkpoints: the results folder itself, audio samples, mel-spectrogram and
loss plots. Plots use ``matplotlib.figure.Figure`` directly, so no pyplot backend or global figure state is
touched."""

from __future__ import annotations

import logging
import math
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

from torch import Tensor, nn

logger = logging.getLogger(__name__)


class Sample(NamedTuple):
    name: str
    wave: Tensor          # (n,) or (1, n)
    sample_hz: int


def prepare_results_folder(folder: Path, *, force_clear: bool | None, can_ask: bool):
    """Create ``folder``; clear its contents if ``force_clear`` (``None``: ask when ``can_ask`` and a terminal
    is attached to stdin and stdout, else keep them), and remove partial checkpoints of interrupted writes."""
    has_content = folder.is_dir() and any(folder.iterdir())
    if has_content and force_clear is None:
        if can_ask and sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty():
            answer = input(f'clear previous results and checkpoints in {folder}? (y/n) ')
            force_clear = answer.strip().lower() in ('y', 'yes')
        else:
            logger.info('keeping the existing contents of %s (no terminal to ask; pass '
                        'force_clear_prev_results=True to clear it)', folder)
    if has_content and force_clear:
        for child in folder.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    folder.mkdir(parents = True, exist_ok = True)
    for stale in folder.glob('.*.pt.*.tmp'):  # left by a process killed while writing a checkpoint
        logger.warning('removing the partial checkpoint %s left by an interrupted write', stale)
        stale.unlink(missing_ok = True)


def write_samples(folder: Path, prefix: str, samples: list[Sample]):
    """``{folder}/samples/{prefix}.{sample.name}.wav`` for each sample."""
    from audiolm_pytorch.audio import save_audio
    sample_dir = folder / 'samples'
    for sample in samples:
        save_audio(sample_dir / f'{prefix}.{sample.name}.wav', sample.wave.float().cpu(), sample.sample_hz)


def plot_results(folder: Path, name: str, step: int, samples: list[Sample], loss_history: dict) -> bool:
    """Mel spectrograms of ``samples`` (``samples/{name}.{step}.mel.png``) and the loss curves of
    ``loss_history`` (``{name}.losses.png``, gradient norms left out). ``False`` when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False

    if samples:
        from audiolm_pytorch.audio import MelSpectrogram
        fig = Figure(figsize = (6, 2.2 * len(samples)))
        for index, sample in enumerate(samples):
            wave = sample.wave.float().cpu().reshape(-1)
            n_fft = min(1024, 2 ** max(4, int(math.log2(max(wave.numel(), 2)))))  # short clips: smaller window
            mel = MelSpectrogram(sample_hz = sample.sample_hz, n_fft = n_fft, hop_length = n_fft // 4,
                                 n_mels = min(64, n_fft // 4), log = True)
            spec = mel(nn.functional.pad(wave, (0, max(0, n_fft - wave.numel())))).numpy()
            ax = fig.add_subplot(len(samples), 1, index + 1)
            ax.imshow(spec, origin = 'lower', aspect = 'auto', interpolation = 'nearest')
            ax.set_title(f'{sample.name} (step {step})', fontsize = 8)
            ax.set_ylabel('mel bin')
        fig.tight_layout()
        fig.savefig(folder / 'samples' / f'{name}.{step}.mel.png', dpi = 80)

    fig = Figure(figsize = (6, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    for key, history in loss_history.items():
        if key.endswith('grad_norm') or not history:
            continue
        steps, values = zip(*history)
        ax.plot(steps, values, label = key, marker = 'o' if len(steps) < 20 else None, markersize = 3)
    ax.set_xlabel('step')
    ax.set_ylabel('loss')
    ax.legend(fontsize = 7)
    fig.tight_layout()
    fig.savefig(folder / f'{name}.losses.png', dpi = 80)
    return True
