"""Audio I/O and DSP (``audiolm_pytorch.audio``) on the real clips in tests/assets."""

import math
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolm_pytorch.audio import (
    AudioDecodeError,
    MelSpectrogram,
    hz_to_mel,
    load_audio,
    mel_filterbank,
    mel_to_hz,
    resample,
    save_audio,
    stft_magnitude,
)
from tests.helpers import NAN, write_bad_files


def snr_db(reference, estimate):
    reference, estimate = np.asarray(reference, dtype = np.float64), np.asarray(estimate, dtype = np.float64)
    return 10 * np.log10(np.sum(reference ** 2) / np.sum((reference - estimate) ** 2))


# ----------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, sample_hz', [
    ('speech_0_16k.wav', 16000), ('speech_0_24k.wav', 24000), ('music_1_16k.wav', 16000),
    ('speech_0.flac', 24000), ('music_0.ogg', 24000), ('speech_1.mp3', 24000), ('stereo_44k.wav', 44100),
])
def test_load_every_format(assets_dir, name, sample_hz):
    path = assets_dir / name
    info = sf.info(str(path))
    wave, hz = load_audio(path)
    assert hz == sample_hz
    assert wave.dtype == torch.float32 and wave.ndim == 2 and wave.shape[0] == 1
    assert abs(wave.shape[1] - info.frames) <= 1
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1.
    assert wave.std() > 0.01   # real signal, not silence


@pytest.mark.parametrize('compressed, reference, min_snr', [
    ('speech_0.flac', 'speech_0_24k.wav', 60.),   # lossless: only int16 rounding differs
    ('music_0.ogg', 'music_0_24k.wav', 15.),      # lossy codecs still match the source waveform
    ('speech_1.mp3', 'speech_1_24k.wav', 15.),
])
def test_compressed_formats_decode_to_their_source(assets_dir, compressed, reference, min_snr):
    decoded = load_audio(assets_dir / compressed).wave[0]
    source = load_audio(assets_dir / reference).wave[0]
    n = min(decoded.shape[0], source.shape[0])
    assert abs(decoded.shape[0] - source.shape[0]) < 1200
    assert snr_db(source[:n], decoded[:n]) > min_snr


def test_stereo_downmix_and_resample(assets_dir):
    path = assets_dir / 'stereo_44k.wav'
    stereo, hz = load_audio(path, mono = False)
    assert hz == 44100 and stereo.shape == (2, 44100)
    assert (stereo[0] - stereo[1]).abs().max() > 0.1     # the channels really differ

    mono, _ = load_audio(path)
    torch.testing.assert_close(mono, stereo.mean(0, keepdim = True))

    mono_16k, hz = load_audio(path, target_sample_hz = 16000)
    assert hz == 16000 and mono_16k.shape == (1, 16000)
    torch.testing.assert_close(mono_16k, resample(mono, 44100, 16000), atol = 1e-6, rtol = 0)

    stereo_24k, hz = load_audio(path, target_sample_hz = 24000, mono = False)
    assert hz == 24000 and stereo_24k.shape == (2, 24000)


def _record_reads(monkeypatch):
    calls = []
    original = sf.read

    def recording_read(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(sf, 'read', recording_read)
    return calls


@pytest.mark.parametrize('name', ['speech_0_24k.wav', 'speech_0.flac', 'music_0.ogg', 'speech_1.mp3'])
def test_offset_and_max_length_read_only_a_segment(assets_dir, monkeypatch, name):
    path = assets_dir / name
    full = load_audio(path).wave
    calls = _record_reads(monkeypatch)

    segment = load_audio(path, offset = 1000, max_length = 5000).wave
    torch.testing.assert_close(segment, full[:, 1000:6000], atol = 1e-6, rtol = 0)   # seeking is sample exact
    assert calls[-1]['start'] == 1000 and calls[-1]['frames'] == 5000

    head = load_audio(path, max_length = 777).wave
    assert torch.equal(head, full[:, :777])


def test_segment_with_resampling_matches_the_full_read(assets_dir, monkeypatch):
    path = assets_dir / 'stereo_44k.wav'
    full = load_audio(path, target_sample_hz = 16000).wave
    calls = _record_reads(monkeypatch)

    # offset 3200 at 16 kHz is a whole number of 44.1 kHz samples (8820)
    segment = load_audio(path, target_sample_hz = 16000, offset = 3200, max_length = 4000).wave
    assert segment.shape == (1, 4000)
    assert calls[-1]['frames'] < 44100 // 2   # only about 4000 * 44.1 / 16 input samples were decoded
    reference = full[:, 3200:7200]
    assert snr_db(reference[:, 50:-50], segment[:, 50:-50]) > 60


def test_segment_at_unaligned_offset_matches_the_full_read(assets_dir):
    path = assets_dir / 'stereo_44k.wav'
    full = load_audio(path, target_sample_hz = 16000).wave
    segment = load_audio(path, target_sample_hz = 16000, offset = 3201, max_length = 4000).wave
    assert snr_db(full[:, 3201 + 50:7201 - 50], segment[:, 50:-50]) > 60


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / 'missing.wav')
    (tmp_path / 'noise.wav').write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(AudioDecodeError):
        load_audio(tmp_path / 'noise.wav')
    nan = np.zeros(100, dtype = np.float32)
    nan[50] = np.nan
    sf.write(str(tmp_path / 'nan.wav'), nan, 16000, subtype = 'FLOAT')
    with pytest.raises(AudioDecodeError, match = 'NaN'):
        load_audio(tmp_path / 'nan.wav')
    assert issubclass(AudioDecodeError, ValueError)


# ----------------------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('suffix', ['wav', 'flac'])
def test_save_load_round_trip(tmp_path, assets_dir, suffix):
    wave = load_audio(assets_dir / 'music_1_24k.wav').wave
    path = save_audio(tmp_path / f'nested/out.{suffix}', wave, 24000)
    back, hz = load_audio(path)
    assert hz == 24000 and back.shape == wave.shape
    assert (back - wave).abs().max() <= 1. / 32768   # both 16-bit PCM


def test_save_float_is_exact_and_accepts_1d(tmp_path):
    wave = torch.rand(1000) * 1.6 - 0.8
    back, _ = load_audio(save_audio(tmp_path / 'float.wav', wave, 16000, subtype = 'FLOAT'))
    assert torch.equal(back[0], wave)

    stereo = torch.rand(2, 500) - 0.5
    back, _ = load_audio(save_audio(tmp_path / 'stereo.wav', stereo, 16000, subtype = 'FLOAT'), mono = False)
    assert torch.equal(back, stereo)


def test_save_clips_and_rejects_bad_input(tmp_path):
    back, _ = load_audio(save_audio(tmp_path / 'loud.wav', torch.tensor([2., -3., 0.5]), 8000))
    assert back.abs().max() <= 1. and back[0, 0] > 0.99 and back[0, 1] == -1.
    with pytest.raises(ValueError, match = 'non-finite'):
        save_audio(tmp_path / 'nan.wav', torch.tensor([0., float('nan')]), 8000)
    with pytest.raises(ValueError):
        save_audio(tmp_path / 'bad.wav', torch.zeros(1, 2, 3), 8000)


# ----------------------------------------------------------------------------------------------------------
# resampling
# ----------------------------------------------------------------------------------------------------------

def log_sweep(sample_hz, seconds, f0, f1):
    t = np.arange(int(seconds * sample_hz)) / sample_hz
    k = math.log(f1 / f0)
    return 0.5 * np.sin(2 * np.pi * f0 * seconds / k * (np.exp(t * k / seconds) - 1.))


def resample_poly_hq(x, orig_hz, new_hz):
    from scipy.signal import resample_poly
    ratio = Fraction(new_hz, orig_hz)
    # scipy's default window (kaiser, beta 5) leaks enough that resample_poly alone is only ~57 dB accurate;
    # beta 10 gives a reference precise enough (~100 dB stop band) to measure a 60 dB target against
    return resample_poly(x, ratio.numerator, ratio.denominator, window = ('kaiser', 10.0))


def test_resample_quality_against_scipy():
    pytest.importorskip('scipy')
    sweep = log_sweep(44100, 1.0, 30., 7000.)   # stays inside the pass band of 16 kHz (< 0.945 * 8 kHz)

    ours = resample(resample(torch.from_numpy(sweep).float(), 44100, 16000), 16000, 24000).double().numpy()
    reference = resample_poly_hq(resample_poly_hq(sweep, 44100, 16000), 16000, 24000)

    assert ours.shape == reference.shape == (24000,)
    edge = 1200   # 50 ms at each end: both filters see zero padding there
    assert snr_db(reference[edge:-edge], ours[edge:-edge]) >= 60


def test_resample_removes_content_above_the_new_nyquist():
    t = torch.arange(44100) / 44100
    tone = torch.sin(2 * math.pi * 11000 * t)   # above 8 kHz: must vanish at 16 kHz
    out = resample(tone, 44100, 16000)
    assert out[800:-800].abs().max() < 1e-2


@pytest.mark.parametrize('orig_hz, new_hz, n', [(44100, 16000, 4410), (16000, 24000, 1000), (24000, 16000, 999),
                                                 (22050, 16000, 12345)])
def test_resample_length_and_batching(orig_hz, new_hz, n):
    x = torch.randn(2, 3, n)
    out = resample(x, orig_hz, new_hz)
    assert out.shape == (2, 3, int(n * new_hz // orig_hz)) or out.shape == (2, 3, round(n * new_hz / orig_hz))
    assert abs(out.shape[-1] - n * new_hz / orig_hz) <= 1
    single = resample(x[1, 2], orig_hz, new_hz)
    torch.testing.assert_close(out[1, 2], single, atol = 1e-5, rtol = 0)

    fixed = resample(x, orig_hz, new_hz, output_length = 100)
    assert fixed.shape == (2, 3, 100)
    torch.testing.assert_close(fixed, out[..., :100], atol = 1e-5, rtol = 0)


def test_resample_identity_and_errors():
    x = torch.randn(2, 100)
    assert torch.equal(resample(x, 16000, 16000), x)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


def test_resample_is_differentiable_and_linear():
    x = torch.randn(2, 800, requires_grad = True)
    y = torch.randn(2, 1200)
    out = resample(x, 16000, 24000)
    (out * y).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # a linear map's gradient is its adjoint: <R x, y> == <x, R^T y>
    torch.testing.assert_close((out * y).sum(), (x * x.grad).sum(), rtol = 1e-4, atol = 1e-3)

    x2 = torch.randn(2, 800)
    torch.testing.assert_close(resample(x.detach() + 2 * x2, 16000, 24000),
                               out.detach() + 2 * resample(x2, 16000, 24000), atol = 1e-5, rtol = 0)


def test_resample_keeps_dtype():
    x = torch.randn(1, 480, dtype = torch.float64)
    assert resample(x, 48000, 16000).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason = 'needs a GPU')
def test_resample_on_gpu_matches_cpu():
    x = torch.randn(2, 4410)
    torch.testing.assert_close(resample(x.cuda(), 44100, 16000).cpu(), resample(x, 44100, 16000), atol = 1e-5,
                               rtol = 0)


# ----------------------------------------------------------------------------------------------------------
# mel filterbank against the closed-form definition (written independently, in plain numpy)
# ----------------------------------------------------------------------------------------------------------

def reference_hz_to_mel(f, scale):
    if scale == 'htk':
        return 2595.0 * math.log10(1.0 + f / 700.0)
    # Slaney's Auditory Toolbox: 3 mels per 200 Hz up to 1 kHz, then log-spaced with 27 steps per factor 6.4
    if f < 1000.0:
        return f / (200.0 / 3.0)
    return 15.0 + math.log(f / 1000.0) / (math.log(6.4) / 27.0)


def reference_mel_to_hz(m, scale):
    if scale == 'htk':
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if m < 15.0:
        return m * (200.0 / 3.0)
    return 1000.0 * math.exp((m - 15.0) * math.log(6.4) / 27.0)


def reference_filterbank(sample_hz, n_fft, n_mels, fmin, fmax, scale, slaney_norm):
    lo, hi = reference_hz_to_mel(fmin, scale), reference_hz_to_mel(fmax, scale)
    edges = [reference_mel_to_hz(lo + (hi - lo) * i / (n_mels + 1), scale) for i in range(n_mels + 2)]
    bins = [k * sample_hz / n_fft for k in range(n_fft // 2 + 1)]
    fb = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        left, center, right = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(bins):
            if left < f <= center:
                fb[m, k] = (f - left) / (center - left)
            elif center < f < right:
                fb[m, k] = (right - f) / (right - center)
        if slaney_norm:
            fb[m] *= 2.0 / (right - left)
    return fb


def test_mel_scale_formulas():
    assert hz_to_mel(1000., 'slaney').item() == pytest.approx(15.0)
    assert hz_to_mel(200., 'slaney').item() == pytest.approx(3.0)
    assert hz_to_mel(6400., 'slaney').item() == pytest.approx(42.0)          # 15 + 27 at 1 kHz * 6.4
    assert hz_to_mel(700., 'htk').item() == pytest.approx(2595 * math.log10(2))
    for scale in ('slaney', 'htk'):
        freqs = torch.tensor([0., 50., 999., 1000., 4321., 11025.], dtype = torch.float64)
        torch.testing.assert_close(mel_to_hz(hz_to_mel(freqs, scale), scale), freqs)
        for f in freqs.tolist():
            assert hz_to_mel(f, scale).item() == pytest.approx(reference_hz_to_mel(f, scale), rel = 1e-10, abs = 1e-10)
    with pytest.raises(ValueError):
        hz_to_mel(100., 'bark')


@pytest.mark.parametrize('scale, norm, sample_hz, n_fft, n_mels, fmin, fmax', [
    ('slaney', 'slaney', 16000, 512, 40, 0., None),
    ('slaney', None, 24000, 1024, 64, 20., 11000.),
    ('htk', 'slaney', 22050, 2048, 128, 0., None),
    ('htk', None, 16000, 400, 80, 55., 7600.),
])
def test_mel_filterbank_matches_closed_form(scale, norm, sample_hz, n_fft, n_mels, fmin, fmax):
    fb = mel_filterbank(n_fft = n_fft, n_mels = n_mels, sample_hz = sample_hz, fmin = fmin, fmax = fmax,
                        mel_scale = scale, norm = norm)
    reference = reference_filterbank(sample_hz, n_fft, n_mels, fmin, fmax if fmax else sample_hz / 2, scale,
                                     norm == 'slaney')
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.dtype == torch.float32
    np.testing.assert_allclose(fb.numpy(), reference, rtol = 1e-4, atol = 1e-6 * reference.max())
    assert (fb >= 0).all()


def test_slaney_filters_have_unit_area():
    # each Slaney-normalised triangle has area 1 in Hz; wide (high) filters sample it finely enough to check
    sample_hz, n_fft = 16000, 2048
    fb = mel_filterbank(n_fft = n_fft, n_mels = 40, sample_hz = sample_hz)
    area = fb.sum(-1) * (sample_hz / n_fft)
    torch.testing.assert_close(area[20:-1], torch.ones(19), rtol = 0.02, atol = 0)


def test_mel_filterbank_rejects_bad_ranges():
    with pytest.raises(ValueError):
        mel_filterbank(n_fft = 512, n_mels = 40, sample_hz = 16000, fmax = 9000.)
    with pytest.raises(ValueError):
        mel_filterbank(n_fft = 512, n_mels = 40, sample_hz = 16000, norm = 'l2')


# ----------------------------------------------------------------------------------------------------------
# STFT magnitude and mel spectrogram
# ----------------------------------------------------------------------------------------------------------

def test_stft_magnitude_matches_numpy(assets_dir):
    wave = load_audio(assets_dir / 'speech_2_16k.wav').wave[0, :8000]
    n_fft, hop = 512, 128
    magnitude = stft_magnitude(wave, n_fft = n_fft, hop_length = hop)
    assert magnitude.shape == (n_fft // 2 + 1, 8000 // hop + 1)

    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)   # periodic Hann
    x = wave.double().numpy()
    for frame in (10, 31, 50):
        start = frame * hop - n_fft // 2   # centred frames; these lie fully inside the signal
        expected = np.abs(np.fft.rfft(window * x[start:start + n_fft]))
        np.testing.assert_allclose(magnitude[:, frame].numpy(), expected, rtol = 1e-3, atol = 1e-4)

    power = stft_magnitude(wave, n_fft = n_fft, hop_length = hop, power = 2.)
    torch.testing.assert_close(power, magnitude ** 2, rtol = 1e-4, atol = 1e-6)


def test_mel_spectrogram_shapes_and_log(assets_dir):
    wave = load_audio(assets_dir / 'music_2_24k.wav').wave[0, :12000]
    mel = MelSpectrogram(sample_hz = 24000, n_fft = 1024, hop_length = 256, n_mels = 64)
    log_mel = MelSpectrogram(sample_hz = 24000, n_fft = 1024, hop_length = 256, n_mels = 64, log = True)

    out = mel(wave)
    assert out.shape == (64, 12000 // 256 + 1)
    batched = mel(torch.stack([wave, wave * 0.5]).unsqueeze(1))     # (b, c, n)
    assert batched.shape == (2, 1, 64, 47)
    torch.testing.assert_close(batched[0, 0], out)
    torch.testing.assert_close(batched[1, 0], out * 0.5, rtol = 1e-4, atol = 1e-6)  # power=1 is linear in gain
    torch.testing.assert_close(log_mel(wave), torch.log(out.clamp(min = 1e-5)))
    assert len(mel.state_dict()) == 0   # filterbank and window buffers never enter checkpoints


def test_mel_spectrogram_peaks_at_the_tone():
    sample_hz, freq = 16000, 1500.
    t = torch.arange(sample_hz) / sample_hz
    mel = MelSpectrogram(sample_hz = sample_hz, n_fft = 1024, hop_length = 256, n_mels = 80, mel_scale = 'htk')
    spectrum = mel(torch.sin(2 * math.pi * freq * t)).mean(-1)
    centers = mel_to_hz(torch.linspace(0., hz_to_mel(8000., 'htk').item(), 82)[1:-1], 'htk')
    assert abs(centers[spectrum.argmax()].item() - freq) < 60


def test_mel_spectrogram_gradient_is_finite_at_silence():
    wave = torch.zeros(2, 4000, requires_grad = True)
    MelSpectrogram(sample_hz = 16000, n_fft = 256, n_mels = 32, log = True)(wave).sum().backward()
    assert torch.isfinite(wave.grad).all()


def test_mel_spectrogram_in_float32_when_cast_to_bf16_or_autocast():
    from audiolm_pytorch.audio import MelSpectrogram
    mel = MelSpectrogram(sample_hz = 16000, n_fft = 256, hop_length = 64, n_mels = 16, log = True)
    wave = torch.randn(2, 2000) * 0.1
    reference = mel(wave)
    with torch.autocast('cpu', dtype = torch.bfloat16):
        assert torch.allclose(mel(wave), reference)
    half = mel.to(torch.bfloat16)           # e.g. a whole SoundStream cast with .to(torch.bfloat16)
    out = half(wave.bfloat16())
    assert out.dtype == torch.float32 and torch.allclose(out, reference, atol = 0.1)


# ---- bad files and what save_audio cannot write faithfully ---------------------------------------------------------

@pytest.mark.parametrize('case', ['zero_bytes', 'truncated_header', 'not_audio', 'zero_frames', 'nan'])
def test_load_audio_bad_files_raise_audio_decode_error(tmp_path, case):
    path = write_bad_files(tmp_path)[case]
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path)
    assert isinstance(info.value, ValueError) and str(path) in str(info.value)


def test_load_audio_missing_file_and_bad_rate(tmp_path):
    good = write_bad_files(tmp_path)['good']
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / 'missing.wav')
    for rate in (0, -16000):   # was a ZeroDivisionError / a misleading "holds no samples"
        with pytest.raises(ValueError, match = 'target_sample_hz must be a positive'):
            load_audio(good, target_sample_hz = rate)


@pytest.mark.parametrize('case', ['rate_zero', 'empty', 'transposed', 'unknown_extension', 'nan', 'int'])
def test_save_audio_refuses_what_it_cannot_write_faithfully(tmp_path, case):
    wave, name, hz, message = {
        'rate_zero': (torch.zeros(100), 'a.wav', 0, 'positive'),                       # was LibsndfileError
        'empty': (torch.zeros(0), 'a.wav', 16000, 'empty'),                            # unreadable afterwards
        'transposed': (torch.zeros(1000, 2), 'a.wav', 16000, 'wave.T'),               # was 1000 channels, 2 samples
        'unknown_extension': (torch.zeros(100), 'a.xyz', 16000, 'extension'),          # was TypeError
        'nan': (torch.full((100,), NAN), 'a.wav', 16000, 'non-finite'),
        'int': (torch.zeros(100, dtype = torch.int16), 'a.wav', 16000, 'float'),
    }[case]
    with pytest.raises(ValueError, match = message):
        save_audio(tmp_path / name, wave, hz)
    assert not (tmp_path / name).exists()
    # a short stereo clip (more channels than samples, but plausibly (channels, n)) is still written
    back = load_audio(save_audio(tmp_path / 'short.wav', torch.zeros(2, 1), 8000), mono = False)
    assert back.wave.shape == (2, 1)


# ---- integer PCM is refused by save_audio --------------------------------------------------------------------------

def test_save_audio_refuses_integer_pcm(tmp_path):
    # clipping int16 samples to [-1, 1] used to write a file of -1 / 0 / 1 values without a word
    from audiolm_pytorch.audio import save_audio
    pcm = (np.sin(np.arange(800) / 5.) * 20000).astype(np.int16)
    with pytest.raises(ValueError, match = 'integer PCM'):
        save_audio(tmp_path / 'a.wav', pcm, 16000)
    with pytest.raises(ValueError, match = 'integer PCM'):
        save_audio(tmp_path / 'a.wav', torch.from_numpy(pcm), 16000)
    save_audio(tmp_path / 'a.wav', pcm.astype(np.float32) / 32768, 16000)
    assert np.abs(load_audio(tmp_path / 'a.wav').wave.numpy()[0] * 32768 - pcm).max() <= 1
