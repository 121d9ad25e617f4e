"""Audio I/O (soundfile) and DSP in torch: resampling, STFT magnitudes, mel filterbanks and spectrograms.

Everything here runs batched on CPU or GPU and is differentiable where it makes sense. No torchaudio.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from audiolm_pytorch.utils import beartype, default, exists

AUDIO_EXTENSIONS = ('flac', 'wav', 'mp3', 'ogg')


class AudioDecodeError(ValueError):
    """An audio file could not be decoded into finite samples (empty, truncated, corrupt, NaN, not audio)."""


class LoadedAudio(NamedTuple):
    wave: Tensor       # (channels, n) float32 in [-1, 1]
    sample_hz: int     # rate of ``wave`` (the target rate when one was asked for)


# ----------------------------------------------------------------------------------------------------------
# I/O
# ----------------------------------------------------------------------------------------------------------

def audio_info(path: str | os.PathLike):
    """``soundfile.info`` with a clear error for unreadable files."""
    import soundfile as sf
    try:
        return sf.info(str(path))
    except Exception as error:  # soundfile raises LibsndfileError / RuntimeError / TypeError depending on the file
        raise AudioDecodeError(f'cannot read audio file {path}: {error}') from error


@beartype
def load_audio(
    path: str | os.PathLike,
    target_sample_hz: int | None = None,
    mono: bool = True,
    max_length: int | None = None,
    offset: int | None = None,
) -> LoadedAudio:
    """Load wav / flac / ogg / mp3 (anything libsndfile reads) at any rate and channel count.

    Args:
        target_sample_hz: resample to this rate (``None`` keeps the file's rate).
        mono: average channels, returning ``(1, n)``.
        max_length: read at most this many samples (counted at the output rate); only that segment is decoded.
        offset: start this many samples (at the output rate) into the file.

    Returns:
        ``LoadedAudio(wave (channels, n) float32, sample_hz)``.

    Raises:
        FileNotFoundError for a missing file, ``AudioDecodeError`` for empty, corrupt or non-finite audio.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'audio file not found: {path}')
    if exists(target_sample_hz) and target_sample_hz <= 0:
        raise ValueError(f'target_sample_hz must be a positive rate in Hz, got {target_sample_hz}')

    info = audio_info(path)
    file_hz = int(info.samplerate)
    out_hz = default(target_sample_hz, file_hz)
    offset = default(offset, 0)
    if offset < 0 or (exists(max_length) and max_length <= 0):
        raise ValueError(f'offset must be >= 0 and max_length > 0, got offset={offset}, max_length={max_length}')

    # Read only the needed segment. When resampling, start on the sample grid shared by both rates (a whole
    # number of periods of gcd) and with enough left context for the resampling kernel, so the segment is an
    # exact slice of resampling the whole file.
    divisor = math.gcd(file_hz, out_hz)
    file_period, out_period = file_hz // divisor, out_hz // divisor
    periods, remainder = divmod(offset, out_period)
    context_periods = 0
    if file_hz != out_hz:
        kernel_margin = 64 + 32 * max(file_hz, out_hz) // min(file_hz, out_hz)   # input samples of context
        context_periods = min(periods, -(-kernel_margin // file_period))
    start = (periods - context_periods) * file_period
    drop = context_periods * out_period + remainder            # output samples before the requested offset

    frames = -1
    if exists(max_length):
        needed_out = drop + max_length
        frames = int(math.ceil(needed_out * file_hz / out_hz))
        if file_hz != out_hz:
            frames += 64 + 32 * max(file_hz, out_hz) // min(file_hz, out_hz)    # right context

    try:
        data, read_hz = sf.read(str(path), start = start, frames = frames, dtype = 'float32', always_2d = True)
    except Exception as error:
        raise AudioDecodeError(f'cannot decode audio file {path}: {error}') from error

    if data.size == 0:
        raise AudioDecodeError(f'audio file {path} holds no samples' + (f' after offset {offset}' if offset else ''))
    check_audio_values(data, name = f'audio file {path}', error = AudioDecodeError, advice = 'the file is corrupt')

    wave = torch.from_numpy(np.ascontiguousarray(data.T))  # (channels, n)
    if mono:
        wave = wave.mean(dim = 0, keepdim = True)

    if out_hz != read_hz:
        wave = resample(wave, read_hz, out_hz)

    wave = wave[..., drop:]
    if exists(max_length):
        wave = wave[..., :max_length]
    if wave.shape[-1] == 0:
        raise AudioDecodeError(f'audio file {path} holds no samples after offset {offset}')

    return LoadedAudio(wave.contiguous(), int(out_hz))


_MAX_SAVE_CHANNELS = 16   # more channels than samples beyond this is a transposed (n, channels) array


@beartype
def check_audio_values(wave: Tensor | np.ndarray, *, name: str = 'audio', error: type[Exception] = ValueError,
                       advice: str = 'clean or drop this input') -> Tensor | np.ndarray:
    """The checks every entry point taking raw audio makes (shape rules stay with the caller): a float tensor (or
    numpy array), at least one row and one sample, no NaN / inf. Returns ``wave``; raises ``error`` (default
    ``ValueError``; ``load_audio`` raises ``AudioDecodeError``) naming ``name`` and saying what to do (``advice``
    for non-finite samples)."""
    if isinstance(wave, np.ndarray):
        if not np.issubdtype(wave.dtype, np.floating):
            raise error(f'{name} must be floating-point audio in [-1, 1], got dtype {wave.dtype}: convert with '
                        '.astype(np.float32) (and divide int16 PCM by 32768)')
        finite = bool(np.isfinite(wave).all())
    elif torch.is_tensor(wave):
        if not wave.is_floating_point():
            raise error(f'{name} must be floating-point audio in [-1, 1], got dtype {wave.dtype}: convert with '
                        '.float() (and divide int16 PCM by 32768)')
        finite = None
    else:
        raise error(f'{name} must be a waveform tensor, got {type(wave).__name__}')
    if wave.ndim > 1 and wave.shape[0] == 0:
        raise error(f'{name} is an empty batch (shape {tuple(wave.shape)}): pass at least one waveform')
    if wave.size == 0 if isinstance(wave, np.ndarray) else wave.numel() == 0:
        raise error(f'{name} is an empty waveform (shape {tuple(wave.shape)}): pass at least one sample')
    if finite is None:
        finite = bool(torch.isfinite(wave).all())
    if not finite:
        raise error(f'{name} contains non-finite (NaN or infinite) samples: {advice}')
    return wave


def save_audio(path: str | os.PathLike, wave: Tensor | np.ndarray, sample_hz: int, subtype: str | None = None) -> Path:
    """Write ``wave`` of shape ``(n,)`` or ``(channels, n)`` (float, nominally in [-1, 1]); the format follows the
    file extension. Values are clipped to [-1, 1] for integer formats."""
    import soundfile as sf

    if isinstance(wave, Tensor):
        if wave.dtype == torch.bool or not (wave.is_floating_point() or wave.is_complex()):
            raise ValueError(f'save_audio expects float samples in [-1, 1], got {wave.dtype}: convert integer PCM '
                             'first (e.g. wave.float() / 32768 for int16)')
        wave = wave.detach().float().cpu().numpy()
    elif not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f'save_audio expects float samples in [-1, 1], got {wave.dtype}: convert integer PCM '
                         'first (e.g. wave.astype(np.float32) / 32768 for int16)')
    if wave.ndim == 1:
        wave = wave[None]
    if wave.ndim != 2:
        raise ValueError(f'save_audio expects (n,) or (channels, n), got shape {tuple(wave.shape)}')
    if sample_hz <= 0:
        raise ValueError(f'sample_hz must be a positive rate in Hz, got {sample_hz}')
    if wave.shape[-1] == 0:
        raise ValueError(f'refusing to write an empty wave (shape {tuple(wave.shape)}) to {path}: load_audio could '
                         'not read it back')
    if wave.shape[0] > _MAX_SAVE_CHANNELS and wave.shape[0] > wave.shape[1]:
        raise ValueError(f'wave of shape {tuple(wave.shape)} would be written as {wave.shape[0]} channels of '
                         f'{wave.shape[1]} samples; save_audio takes (channels, n): pass wave.T for (n, channels)')
    check_audio_values(wave, name = f'the wave to write to {path}', advice = 'refusing to write them')
    path = Path(path)
    if path.suffix.lstrip('.').upper() not in sf.available_formats():
        raise ValueError(f'cannot tell the audio format of {path} from its extension: use .wav, .flac, .ogg, .mp3 '
                         '(or another format libsndfile writes)')
    path.parent.mkdir(parents = True, exist_ok = True)
    sf.write(str(path), np.clip(wave.T, -1., 1.), sample_hz, subtype = subtype)
    return path


# ----------------------------------------------------------------------------------------------------------
# resampling
# ----------------------------------------------------------------------------------------------------------

@beartype
def resample(wave: Tensor, orig_hz: int, new_hz: int, output_length: int | None = None) -> Tensor:
    """Band-limited (windowed-sinc) resampling along the last dimension; batched, GPU-capable, differentiable.

    ``wave``: ``(..., n)`` -> ``(..., round(n * new_hz / orig_hz))``.
    """
    if orig_hz <= 0 or new_hz <= 0:
        raise ValueError(f'sample rates must be positive, got {orig_hz} -> {new_hz}')
    if orig_hz == new_hz:
        return wave if not exists(output_length) else wave[..., :output_length]
    if wave.shape[-1] == 0:   # nothing to resample (julius cannot take an empty signal); callers check emptiness
        return wave.new_zeros(*wave.shape[:-1], 0)

    divisor = math.gcd(orig_hz, new_hz)
    resampler = _resampler(orig_hz // divisor, new_hz // divisor, str(wave.device))
    with torch.device('cpu'):   # julius sizes its output with host scalars; keep them there whatever the default
        out = resampler(wave.float(), output_length = output_length)
    return out.to(wave.dtype)


@lru_cache(maxsize = 32)
def _resampler(orig: int, new: int, device: str):
    """Building the sinc kernel costs far more than applying it: keep one per (reduced) rate pair and device."""
    import julius
    with torch.device('cpu'):   # the kernel is built on the host whatever the ambient default device, then moved
        resampler = julius.ResampleFrac(orig, new)
    return resampler.to(device)


# ----------------------------------------------------------------------------------------------------------
# spectral features
# ----------------------------------------------------------------------------------------------------------

def hz_to_mel(hz: Tensor | float, mel_scale: str = 'slaney') -> Tensor:
    hz = torch.as_tensor(hz, dtype = torch.float64)
    if mel_scale == 'htk':
        return 2595. * torch.log10(1. + hz / 700.)
    if mel_scale != 'slaney':
        raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
    # Slaney (Auditory Toolbox): linear below 1 kHz, logarithmic above
    linear = 3. * hz / 200.
    log_part = 15. + torch.log(hz.clamp(min = 1e-10) / 1000.) / (math.log(6.4) / 27.)
    return torch.where(hz >= 1000., log_part, linear)


def mel_to_hz(mel: Tensor | float, mel_scale: str = 'slaney') -> Tensor:
    mel = torch.as_tensor(mel, dtype = torch.float64)
    if mel_scale == 'htk':
        return 700. * (10. ** (mel / 2595.) - 1.)
    if mel_scale != 'slaney':
        raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
    linear = 200. * mel / 3.
    log_part = 1000. * torch.exp((math.log(6.4) / 27.) * (mel - 15.))
    return torch.where(mel >= 15., log_part, linear)


@lru_cache(maxsize = 64)
def _mel_filterbank_cached(n_fft, n_mels, sample_hz, fmin, fmax, mel_scale, norm):
    n_freqs = n_fft // 2 + 1
    fft_hz = torch.linspace(0, sample_hz / 2, n_freqs, dtype = torch.float64)
    mel_points = torch.linspace(hz_to_mel(fmin, mel_scale).item(), hz_to_mel(fmax, mel_scale).item(), n_mels + 2,
                                dtype = torch.float64)
    hz_points = mel_to_hz(mel_points, mel_scale)                      # (n_mels + 2,)

    lower, center, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (fft_hz[None] - lower) / (center - lower)
    falling = (upper - fft_hz[None]) / (upper - center)
    fb = torch.clamp(torch.minimum(rising, falling), min = 0.)       # (n_mels, n_freqs)

    if norm == 'slaney':
        fb = fb * (2. / (upper - lower))                               # equal area per filter
    elif exists(norm):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    return fb.float()


@beartype
def mel_filterbank(
    *, n_fft: int, n_mels: int, sample_hz: int, fmin: float = 0., fmax: float | None = None,
    mel_scale: str = 'slaney', norm: str | None = 'slaney',
) -> Tensor:
    """Triangular mel filterbank ``(n_mels, n_fft // 2 + 1)`` (matches librosa's ``filters.mel`` definition)."""
    fmax = default(fmax, sample_hz / 2)
    if not 0 <= fmin < fmax <= sample_hz / 2:
        raise ValueError(f'need 0 <= fmin < fmax <= sample_hz / 2, got fmin={fmin}, fmax={fmax}, sample_hz={sample_hz}')
    return _mel_filterbank_cached(n_fft, n_mels, sample_hz, float(fmin), float(fmax), mel_scale, norm).clone()


def stft_magnitude(
    wave: Tensor, *, n_fft: int, hop_length: int, win_length: int | None = None, window: Tensor | None = None,
    center: bool = True, power: float = 1.,
) -> Tensor:
    """``(..., n)`` -> ``(..., n_fft // 2 + 1, frames)``; computed in float32 (also under bf16 autocast)."""
    win_length = default(win_length, n_fft)
    batch_shape = wave.shape[:-1]
    wave = wave.reshape(-1, wave.shape[-1]).float()
    window = default(window, lambda: torch.hann_window(win_length, device = wave.device))
    with torch.autocast(device_type = wave.device.type, enabled = False):
        spec = torch.stft(wave, n_fft, hop_length = hop_length, win_length = win_length, window = window.float(),
                          center = center, pad_mode = 'reflect' if center else 'constant', return_complex = True)
        # magnitude through real/imag so the gradient at zero is finite
        magnitude = torch.view_as_real(spec).pow(2).sum(-1).clamp(min = 1e-10 if power != 2 else 0.)
        magnitude = magnitude.pow(power / 2)
    return magnitude.reshape(*batch_shape, *magnitude.shape[-2:])


class MelSpectrogram(nn.Module):
    """(Log-)mel spectrogram in torch.

    ``forward(wave (..., n)) -> (..., n_mels, frames)``. Buffers are non-persistent, so they never enter
    checkpoints.
    """

    @beartype
    def __init__(
        self, *, sample_hz: int, n_fft: int = 1024, win_length: int | None = None, hop_length: int | None = None,
        n_mels: int = 80, fmin: float = 0., fmax: float | None = None, power: float = 1., center: bool = True,
        mel_scale: str = 'slaney', norm: str | None = 'slaney', log: bool = False, log_eps: float = 1e-5,
    ):
        super().__init__()
        self.sample_hz = sample_hz
        self.n_fft = n_fft
        self.win_length = default(win_length, n_fft)
        self.hop_length = default(hop_length, self.win_length // 4)
        self.power, self.center, self.log, self.log_eps = power, center, log, log_eps
        self.register_buffer('window', torch.hann_window(self.win_length), persistent = False)
        fb = mel_filterbank(n_fft = n_fft, n_mels = n_mels, sample_hz = sample_hz, fmin = fmin, fmax = fmax,
                            mel_scale = mel_scale, norm = norm)
        self.register_buffer('filterbank', fb, persistent = False)

    def forward(self, wave: Tensor) -> Tensor:
        magnitude = stft_magnitude(wave, n_fft = self.n_fft, hop_length = self.hop_length, win_length = self.win_length,
                                   window = self.window, center = self.center, power = self.power)
        # float32 like the magnitude, also when the module was cast to half precision or runs under autocast
        with torch.autocast(device_type = magnitude.device.type, enabled = False):
            mel = torch.einsum('m f, ... f t -> ... m t', self.filterbank.float(), magnitude)
        if self.log:
            mel = torch.log(mel.clamp(min = self.log_eps))
        return mel
