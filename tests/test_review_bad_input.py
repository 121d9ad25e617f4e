"""Adversarial review of bad-input handling at the public entry points.

Project rule: bad input (corrupt / empty audio, wrong rate, NaN, mismatched configs, wrong shapes) gets a clear
``ValueError`` (or ``FileNotFoundError`` / a ``ValueError`` subclass) saying what is wrong, or a logged skip —
never an obscure internal error and never a silent wrong result.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolm_pytorch.audio import AudioDecodeError, LoadedAudio, load_audio, save_audio

sys.path.insert(0, str(Path(__file__).parent))

NAN, INF = float('nan'), float('inf')
TINY_LM = dict(dim = 16, depth = 1, heads = 2, dim_head = 8)


# ----------------------------------------------------------------------------------------------------------
# SoundStream
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def codec():
    from audiolm_pytorch import SoundStream
    torch.manual_seed(0)
    return SoundStream(codebook_size = 16, rq_num_quantizers = 2, channels = 4, strides = (2, 2), channel_mults = (1, 2),
                       codebook_dim = 8, attn_window_size = 4, attn_heads = 1, attn_dim_head = 8,
                       multi_spectral_window_powers_of_two = (5, 6), multi_spectral_n_mels = 8,
                       discr_multi_scales = (1,), stft_discriminator = False).eval()


BAD_AUDIO = {
    'nan': (lambda: torch.full((2, 256), NAN), 'NaN'),
    'inf': (lambda: torch.randn(2, 256).index_fill(1, torch.tensor([7]), INF), 'NaN or infinite'),
    'int_pcm': (lambda: torch.randint(-3000, 3000, (2, 256)), 'floating-point'),
    'four_dim': (lambda: torch.randn(1, 1, 1, 256), 'shape'),
    'zero_samples': (lambda: torch.zeros(2, 0), 'shorter than one codec frame'),
    'shorter_than_a_frame': (lambda: torch.zeros(2, 3), 'shorter than one codec frame'),
    'batch_zero': (lambda: torch.zeros(0, 256), 'empty'),
}


@pytest.mark.parametrize('case', sorted(BAD_AUDIO))
def test_soundstream_rejects_bad_audio_everywhere(codec, case):
    make, message = BAD_AUDIO[case]
    with pytest.raises(ValueError, match = message):
        codec.tokenize(make())
    with pytest.raises(ValueError, match = message):
        codec(make(), return_recons_only = True)
    with pytest.raises(ValueError, match = message):
        codec(make())                                   # training loss


def test_soundstream_loaded_audio_at_the_wrong_rate_needs_input_sample_hz(codec):
    wave = LoadedAudio(torch.randn(1, 400), 8000)
    with pytest.raises(ValueError, match = 'input_sample_hz=8000'):
        codec.tokenize(wave)
    assert codec.tokenize(wave, input_sample_hz = 8000).shape[1] == 800 // codec.downsample_factor


BAD_CODES = {
    'too_large': (lambda c: c + 16, r'\[0, 16\)'),
    'negative_not_pad': (lambda c: c - 5, r'\[0, 16\)'),
    'float': (lambda c: c.float(), 'integer codes'),
    'one_dim': (lambda c: c[0, :, 0], 'integer codes'),
    'four_dim': (lambda c: c[None], 'integer codes'),
    'too_many_levels': (lambda c: torch.cat((c, c), dim = -1), 'levels'),
    'batch_zero': (lambda c: c[:0], 'empty'),
}


@pytest.mark.parametrize('case', sorted(BAD_CODES))
def test_soundstream_decode_rejects_bad_codes(codec, case):
    codes = codec.tokenize(torch.randn(2, 64))
    change, message = BAD_CODES[case]
    with pytest.raises(ValueError, match = message):
        codec.decode_from_codebook_indices(change(codes))
    with pytest.raises(ValueError, match = message):
        codec.decode_chunk(change(codes), codec.init_decoder_state(2))


def test_soundstream_zero_frames_decode_to_zero_samples(codec):
    # was an einops AxisSizeError; zero frames are exactly zero samples
    codes = codec.tokenize(torch.randn(2, 64))
    assert codec.decode_from_codebook_indices(codes[:, :0]).shape == (2, 1, 0)
    # documented pad: -1 (dropped level) still decodes
    assert codec.decode_from_codebook_indices(codes.masked_fill(torch.ones_like(codes).bool(), -1)).shape == (2, 1, 64)


def test_soundstream_streaming_checks_batch_and_passes_empty_chunks(codec):
    wave = torch.randn(2, 64)
    state = codec.init_encoder_state(2)
    with pytest.raises(ValueError, match = 'init_encoder_state\\(batch_size=3\\)'):
        codec.encode_chunk(torch.randn(3, 32), state)   # was a RuntimeError from torch.cat
    with pytest.raises(ValueError, match = 'whole frames'):
        codec.encode_chunk(wave[:, :5], state)
    # an empty chunk (was a conv RuntimeError) gives no codes and leaves the stream where it was
    pieces = []
    for chunk in (wave[:, :32], wave[:, 32:32], wave[:, 32:]):
        codes, state = codec.encode_chunk(chunk, state)
        pieces.append(codes)
    assert pieces[1].shape == (2, 0, 2)
    assert torch.equal(torch.cat(pieces, dim = 1), codec.tokenize(wave))

    codes = codec.tokenize(wave)
    dstate = codec.init_decoder_state(2)
    with pytest.raises(ValueError, match = 'init_decoder_state\\(batch_size=1\\)'):
        codec.decode_chunk(codes[:1], dstate)
    audio = []
    for chunk in (codes[:, :5], codes[:, 5:5], codes[:, 5:]):
        out, dstate = codec.decode_chunk(chunk, dstate)
        audio.append(out)
    assert audio[1].shape == (2, 1, 0)
    assert torch.allclose(torch.cat(audio, dim = -1), codec.decode_from_codebook_indices(codes), atol = 1e-5)


# ----------------------------------------------------------------------------------------------------------
# audio I/O
# ----------------------------------------------------------------------------------------------------------

def write_bad_files(folder: Path) -> dict:
    """Corrupt / truncated / zero-length / NaN files: name -> path."""
    folder.mkdir(parents = True, exist_ok = True)
    good = folder / 'good.wav'
    sf.write(good, (np.sin(np.arange(4000) / 10.) * 0.3).astype(np.float32), 16000)
    raw = good.read_bytes()
    files = dict(good = good)
    files['zero_bytes'] = folder / 'zero_bytes.wav'
    files['zero_bytes'].write_bytes(b'')
    files['truncated_header'] = folder / 'truncated_header.wav'
    files['truncated_header'].write_bytes(raw[:30])
    files['not_audio'] = folder / 'not_audio.flac'
    files['not_audio'].write_bytes(b'this is not audio at all ' * 40)
    files['zero_frames'] = folder / 'zero_frames.wav'
    sf.write(files['zero_frames'], np.zeros(0, dtype = np.float32), 16000)
    files['nan'] = folder / 'nan.wav'
    sf.write(files['nan'], np.full(100, np.nan, dtype = np.float32), 16000, subtype = 'FLOAT')
    return files


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


# ----------------------------------------------------------------------------------------------------------
# datasets
# ----------------------------------------------------------------------------------------------------------

def test_sound_dataset_folders_without_usable_audio(tmp_path):
    from audiolm_pytorch import SoundDataset
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match = 'no audio files'):
        SoundDataset(tmp_path / 'empty', 16000)
    with pytest.raises(FileNotFoundError):
        SoundDataset(tmp_path / 'nowhere', 16000)
    files = write_bad_files(tmp_path / 'bad')
    files['good'].unlink()
    nan_file = files['nan'].rename(tmp_path / 'nan.wav')
    with pytest.warns(UserWarning, match = 'skipping audio file'), pytest.raises(ValueError, match = 'none of the'):
        SoundDataset(tmp_path / 'bad', 16000)
    # a NaN file has a valid header: it is found (and skipped, logged) when read; with nothing else left the
    # error names the skipped files (a ValueError, and a RuntimeError as tests/test_data.py pins)
    (tmp_path / 'nan_only').mkdir()
    nan_file.rename(tmp_path / 'nan_only' / 'nan.wav')
    ds = SoundDataset(tmp_path / 'nan_only', 16000)
    with pytest.warns(UserWarning, match = 'NaN'), pytest.raises(ValueError, match = 'none of the') as info:
        ds[0]
    assert isinstance(info.value, RuntimeError)


def test_sound_dataset_skips_corrupt_files_with_a_warning(tmp_path):
    from audiolm_pytorch import SoundDataset
    from audiolm_pytorch.data import SkippedAudioWarning
    files = write_bad_files(tmp_path)
    with pytest.warns(SkippedAudioWarning):
        ds = SoundDataset(tmp_path, 16000, max_length = 800)
    skipped = {Path(path).name for path, _ in ds.skipped}
    # every bad file is recorded with its reason; the NaN file's header is fine, so it is found when read
    assert {'zero_bytes.wav', 'truncated_header.wav', 'not_audio.flac', 'zero_frames.wav'} <= skipped
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SkippedAudioWarning)
        items = [ds[i] for i in range(len(ds))]
    assert all(item.shape == (800,) and torch.isfinite(item).all() for item in items)
    assert 'nan.wav' in {Path(path).name for path, _ in ds.skipped}
    assert str(files['good']) not in {path for path, _ in ds.skipped}


def test_text_audio_dataset_skips_corrupt_rows(tmp_path):
    from audiolm_pytorch.data import SkippedAudioWarning, TextAudioDataset
    write_bad_files(tmp_path)
    manifest = tmp_path / 'pairs.csv'
    manifest.write_text('path,text\ngood.wav,a good clip\nzero_bytes.wav,broken\nmissing.wav,gone\n')
    with pytest.warns(SkippedAudioWarning):
        ds = TextAudioDataset(manifest, 16000, max_length = 400)
    assert len(ds.skipped) == 2
    text, wave = ds[1]                        # the broken row is replaced by a readable one, never crashes
    assert text == 'a good clip' and wave.shape == (400,)


def test_max_length_shorter_than_one_frame_is_refused_up_front(tmp_path):
    # was: every file skipped as "too short" at the first batch, then a RuntimeError blaming the files
    from audiolm_pytorch import SoundDataset
    write_bad_files(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match = 'seq_len_multiple_of'):
            SoundDataset(tmp_path, 16000, max_length = 100, seq_len_multiple_of = 320)
        with pytest.raises(ValueError, match = 'seq_len_multiple_of'):
            SoundDataset(tmp_path, (16000, 24000), max_length = 200, seq_len_multiple_of = (None, 320))


# ----------------------------------------------------------------------------------------------------------
# trainers
# ----------------------------------------------------------------------------------------------------------

def tiny_trainer(tmp_path, folder, **kwargs):
    from audiolm_pytorch import SoundStreamTrainer
    from test_trainer_soundstream import tiny_soundstream
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


# ----------------------------------------------------------------------------------------------------------
# semantic / coarse / fine wrappers
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def wrappers():
    from audiolm_pytorch import (CoarseTransformer, CoarseTransformerWrapper, FineTransformer, FineTransformerWrapper,
                                 SemanticTransformer, SemanticTransformerWrapper)
    from test_lm_coarse_fine import StubCodec
    from test_lm_semantic import StubSemanticTokenizer
    torch.manual_seed(0)
    wav2vec, codec = StubSemanticTokenizer(codebook_size = 10), StubCodec(codebook_size = 8, num_quantizers = 4)
    semantic = SemanticTransformerWrapper(transformer = SemanticTransformer(num_semantic_tokens = 10, **TINY_LM),
                                          wav2vec = wav2vec)
    coarse = CoarseTransformerWrapper(transformer = CoarseTransformer(num_semantic_tokens = 10, codebook_size = 8,
                                                                      num_coarse_quantizers = 2, **TINY_LM),
                                      codec = codec, wav2vec = wav2vec)
    fine = FineTransformerWrapper(transformer = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2,
                                                                codebook_size = 8, **TINY_LM), codec = codec)
    return dict(semantic = semantic, coarse = coarse, fine = fine)


SEM = torch.randint(0, 10, (2, 6))
COARSE = torch.randint(0, 8, (2, 3, 2))
FINE = torch.randint(0, 8, (2, 3, 2))

BAD_SEMANTIC_IDS = {
    'beyond_eos': (torch.full((2, 6), 11), r'\[0, 11\)'),          # was IndexError from the embedding
    'negative_not_pad': (torch.full((2, 6), -5), r'\[0, 11\)'),    # was IndexError from cross_entropy
    'float': (SEM.float() + 0.5, 'integer'),                       # was silently truncated
    'one_dim': (SEM[0], r'\[None\]'),                              # was read as 6 sequences of one token
    'three_dim': (SEM[..., None], r'\(b, n\)'),
    'batch_zero': (SEM[:0], 'empty batch'),                        # was a NaN loss
    'no_tokens': (torch.full((2, 6), -1), 'no tokens'),            # was IndexError in forgetful masking
}


@pytest.mark.parametrize('case', sorted(BAD_SEMANTIC_IDS))
def test_semantic_wrapper_rejects_bad_ids(wrappers, case):
    ids, message = BAD_SEMANTIC_IDS[case]
    with pytest.raises(ValueError, match = message):
        wrappers['semantic'](semantic_token_ids = ids, return_loss = True)


def test_semantic_wrapper_accepts_eos_and_padding(wrappers):
    ids = SEM.clone()
    ids[0, -2:] = -1
    ids[1, -1] = 10   # EOS id (num_semantic_tokens)
    assert torch.isfinite(wrappers['semantic'](semantic_token_ids = ids, return_loss = True))


@pytest.mark.parametrize('kwargs, message', [
    (dict(max_length = 0), 'max_length'),
    (dict(max_length = 4, batch_size = 0), 'batch_size'),
    (dict(max_length = 4, prime_ids = torch.full((1, 3), 20)), r'\[0, 10\)'),
    (dict(max_length = 4, prime_ids = torch.full((1, 3), 10)), r'\[0, 10\)'),          # EOS in a prime
    (dict(max_length = 4, prime_ids = torch.full((1, 3), 2.7)), 'integer'),
    (dict(max_length = 4, prime_ids = torch.full((3,), 2)), r'\[None\]'),
    (dict(max_length = 4, prime_wave = torch.full((1, 64), NAN)), 'NaN'),
    (dict(max_length = 4, prime_wave = torch.randint(0, 9, (1, 64))), 'floating-point'),
    (dict(max_length = 4, prime_wave = torch.zeros(1, 0)), 'empty'),
    (dict(max_length = 4, prime_wave = torch.zeros(1, 1, 1, 64)), 'mono waveform'),
    (dict(max_length = 4, prime_wave = torch.zeros(1, 64), prime_wave_input_sample_hz = 0), 'input_sample_hz'),
])
def test_semantic_generate_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['semantic'].generate(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(semantic_token_ids = SEM, coarse_token_ids = torch.full((2, 3, 2), 8)), r'\[0, 8\)'),   # coarse EOS id
    (dict(semantic_token_ids = SEM, coarse_token_ids = torch.full((2, 3, 2), 100)), r'\[0, 8\)'),
    (dict(semantic_token_ids = SEM, coarse_token_ids = torch.full((2, 3, 2), -3)), r'\[0, 8\)'),
    (dict(semantic_token_ids = SEM, coarse_token_ids = COARSE.float()), 'integer'),
    (dict(semantic_token_ids = SEM, coarse_token_ids = COARSE[..., :1]), r'\(b, frames, 2\)'),
    (dict(semantic_token_ids = SEM + 50, coarse_token_ids = COARSE), r'\[0, 11\)'),
    (dict(semantic_token_ids = SEM[0], coarse_token_ids = COARSE), r'\[None\]'),                  # was RuntimeError
    (dict(semantic_token_ids = SEM[:1], coarse_token_ids = COARSE), 'rows'),                      # was RuntimeError
    (dict(raw_wave = torch.full((2, 64), NAN)), 'NaN'),
    (dict(raw_wave = torch.zeros(2, 1, 1, 64)), 'mono waveform'),
])
def test_coarse_wrapper_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['coarse'](**kwargs, return_loss = True)


@pytest.mark.parametrize('kwargs, message', [
    (dict(semantic_token_ids = SEM + 50), r'\[0, 11\)'),
    (dict(semantic_token_ids = SEM, prime_coarse_token_ids = torch.full((1, 1, 2), 30)), r'\[0, 8\)'),
    (dict(semantic_token_ids = SEM, prime_coarse_token_ids = torch.full((1, 1, 2), 3.)), 'integer'),
    (dict(semantic_token_ids = SEM, max_time_steps = 0), 'max_time_steps'),
    (dict(semantic_token_ids = SEM[:0]), 'empty batch'),
])
def test_coarse_generate_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['coarse'].generate(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    (dict(coarse_token_ids = COARSE, fine_token_ids = torch.full((2, 3, 2), 8)), r'\[0, 8\)'),    # was IndexError
    (dict(coarse_token_ids = torch.full((2, 3, 2), 8), fine_token_ids = FINE), r'\[0, 8\)'),
    (dict(coarse_token_ids = COARSE, fine_token_ids = torch.full((2, 3, 2), -3)), r'\[0, 8\)'),
    (dict(coarse_token_ids = COARSE.float(), fine_token_ids = FINE.float() + .5), 'integer'),     # was silent
    (dict(coarse_token_ids = COARSE[:1], fine_token_ids = FINE), 'same batch'),                   # was silent
    (dict(token_ids = torch.randint(0, 8, (2, 3, 3))), 'at least 4 levels'),
    (dict(token_ids = torch.randint(0, 8, (2, 3))), 'at least 4 levels'),                          # was EinopsError
    (dict(token_ids = torch.randint(0, 8, (2, 3, 4)) + 8), r'\[0, 8\)'),
    (dict(raw_wave = torch.full((2, 64), INF)), 'NaN'),
])
def test_fine_wrapper_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['fine'](**kwargs, return_loss = True)


@pytest.mark.parametrize('kwargs, message', [
    (dict(coarse_token_ids = torch.full((1, 2, 2), 50)), r'\[0, 8\)'),
    (dict(coarse_token_ids = torch.full((1, 2, 2), 2.5)), 'integer'),                              # was silent
    (dict(coarse_token_ids = torch.full((1, 2, 3), 2)), r'\(b, frames, 2\)'),                      # was silent
    (dict(coarse_token_ids = torch.full((0, 2, 2), 2)), 'empty batch'),                            # was RuntimeError
    (dict(coarse_token_ids = torch.full((1, 2, 2), 2), prime_fine_token_ids = torch.full((1, 1, 2), 99)), r'\[0, 8\)'),
])
def test_fine_generate_rejects_bad_input(wrappers, kwargs, message):
    with pytest.raises(ValueError, match = message):
        wrappers['fine'].generate(**kwargs)


def test_fine_wrapper_raw_wave_without_codec():
    # was AttributeError: 'NoneType' object has no attribute 'num_quantizers'
    from audiolm_pytorch import FineTransformer, FineTransformerWrapper
    wrapper = FineTransformerWrapper(transformer = FineTransformer(num_coarse_quantizers = 1, num_fine_quantizers = 1,
                                                                   codebook_size = 8, **TINY_LM))
    with pytest.raises(ValueError, match = 'no codec'):
        wrapper(raw_wave = torch.randn(1, 64), return_loss = True)


# ----------------------------------------------------------------------------------------------------------
# AudioLM
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def audiolm():
    from test_audiolm import build
    from test_lm_coarse_fine import StubCodec
    from test_lm_semantic import StubSemanticTokenizer
    torch.manual_seed(0)
    return build(StubCodec(), StubSemanticTokenizer())


@pytest.mark.parametrize('kwargs, message', [
    (dict(prime_wave = torch.full((1, 32), NAN)), 'NaN'),                   # was a silent generation from NaN
    (dict(prime_wave = torch.zeros(1, 0)), 'empty'),                        # was RuntimeError from julius
    (dict(prime_wave = torch.zeros(1, 1, 1, 32)), 'mono waveform'),         # was silently accepted
    (dict(batch_size = 0), 'batch_size'),                                   # was RuntimeError
    (dict(max_length = 0), 'max_length'),
])
def test_audiolm_rejects_bad_primes_and_sizes(audiolm, kwargs, message):
    with pytest.raises(ValueError, match = message):
        audiolm(**{**dict(max_length = 6, max_coarse_time_steps = 4), **kwargs})


def test_audiolm_mismatched_stage_configs():
    from audiolm_pytorch import AudioLM, CoarseTransformer, FineTransformer, SemanticTransformer
    from test_lm_coarse_fine import StubCodec
    from test_lm_semantic import StubSemanticTokenizer
    semantic = SemanticTransformer(num_semantic_tokens = 20, **TINY_LM)
    coarse = CoarseTransformer(num_semantic_tokens = 20, codebook_size = 16, num_coarse_quantizers = 2, rq_groups = 2,
                               **TINY_LM)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 3, codebook_size = 32, **TINY_LM)
    with pytest.raises(ValueError) as info:
        AudioLM(wav2vec = StubSemanticTokenizer(codebook_size = 30), codec = StubCodec(num_quantizers = 4),
                semantic_transformer = semantic, coarse_transformer = coarse, fine_transformer = fine)
    message = str(info.value)
    for problem in ('wav2vec has codebook_size=30', 'fine codebook_size=32', 'rq_groups', 'exceed'):
        assert problem in message


@pytest.mark.parametrize('kwargs', [dict(prime_wave = torch.randint(-3000, 3000, (1, 32))),
                                    dict(prime_wave = torch.randn(1, 32), prime_wave_input_sample_hz = 0),
                                    dict(prime_wave = torch.randn(1, 2, 32))])
def test_audiolm_rejects_int_stereo_and_zero_rate_primes(audiolm, kwargs):
    with pytest.raises(ValueError):
        audiolm(max_length = 6, max_coarse_time_steps = 4, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# SoundStorm
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def soundstorm():
    from test_soundstorm import tiny_soundstorm
    torch.manual_seed(0)
    return tiny_soundstorm()


@pytest.mark.parametrize('change, message', [
    (lambda c: c + 16, r'\[0, 16\)'), (lambda c: c - 5, r'\[0, 16\)'), (lambda c: c[..., :2], r'\(batch, frames, 3\)'),
    (lambda c: c[0, :, 0], r'\(batch, frames, 3\)'), (lambda c: c[None], r'\(batch, frames, 3\)'),
    (lambda c: c[:, :0], 'at least one real'), (lambda c: c.float(), 'codec'),
])
def test_soundstorm_rejects_bad_codes(soundstorm, change, message):
    with pytest.raises(ValueError, match = message):
        soundstorm(change(torch.randint(0, 16, (2, 8, 3))))
    with pytest.raises(ValueError, match = 'prompt_acoustic_token_ids'):
        soundstorm.generate(4, prompt_acoustic_token_ids = torch.full((1, 2, 3), 99))


@pytest.mark.parametrize('call', ['forward', 'generate'])
def test_soundstorm_rejects_an_empty_batch(soundstorm, call):
    with pytest.raises(ValueError):
        soundstorm(torch.randint(0, 16, (0, 8, 3))) if call == 'forward' else soundstorm.generate(4, batch_size = 0)


# ----------------------------------------------------------------------------------------------------------
# MuLaN / MusicLM
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def mulan():
    from audiolm_pytorch import AudioSpectrogramTransformer, MuLaN, TextTransformer
    torch.manual_seed(0)
    return MuLaN(AudioSpectrogramTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, patch_size = 4),
                 TextTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, max_seq_len = 8), dim_latent = 8)


@pytest.mark.parametrize('wavs, message', [
    (torch.full((2, 512), NAN), 'NaN'),                      # was a silent NaN loss
    (torch.randint(-3, 3, (2, 512)), 'floating-point'),      # was silently cast
    (torch.zeros(0, 512), 'empty batch'),                    # was a RuntimeError from the STFT
    (torch.zeros(2, 0), 'empty waveform'),
    (torch.zeros(1, 1, 2, 512), r'\(b, n\)'),
])
def test_mulan_rejects_bad_audio(mulan, wavs, message):
    with pytest.raises(ValueError, match = message):
        mulan(wavs, raw_texts = ['a', 'b'])


@pytest.mark.parametrize('texts, message', [
    (torch.ones(2, 20, dtype = torch.long), 'max_seq_len=8'),
    (torch.full((2, 4), 60000), r'\[0, 49408\)'),
    (torch.ones(2, 4), 'integer'),
    (torch.ones(0, 4, dtype = torch.long), 'empty batch'),
    ([], 'at least one text'),
])
def test_mulan_text_tower_rejects_bad_ids(mulan, texts, message):
    with pytest.raises(ValueError, match = message):
        mulan.get_text_latents(texts)


def test_mulan_embed_quantizer_and_musiclm_bad_input(mulan):
    from audiolm_pytorch import MuLaNEmbedQuantizer, MusicLM
    quantizer = MuLaNEmbedQuantizer(mulan, conditioning_dims = 16, rq_num_quantizers = 2, codebook_size = 4)
    with pytest.raises(ValueError, match = 'NaN'):
        quantizer(wavs = torch.full((2, 512), NAN), namespace = 'semantic')
    with pytest.raises(ValueError, match = 'namespace'):
        quantizer(texts = ['a'], namespace = 'acoustic')
    with pytest.raises(ValueError, match = 'exactly one'):
        quantizer(wavs = torch.randn(1, 512), texts = ['a'])

    def audio_lm(text, batch_size, **kwargs):   # the second candidate of each prompt is NaN
        waves = torch.randn(batch_size, 512) * 0.1
        waves[1::2] = NAN
        return waves

    musiclm = MusicLM(audio_lm, quantizer)
    with pytest.raises(ValueError, match = 'at least one text'):
        musiclm([])
    with pytest.raises(ValueError, match = 'num_samples'):
        musiclm(['a'], num_samples = 0)
    # a NaN candidate must not be ranked (argmax of NaN scores would pick it): MuLaN refuses to score it
    with pytest.raises(ValueError, match = 'NaN'):
        musiclm(['a'], num_samples = 2)


# ----------------------------------------------------------------------------------------------------------
# semantic tokenizer (direct use)
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope = 'module')
def hubert(tmp_path_factory):
    import transformers
    from audiolm_pytorch import HubertWithKmeans
    from audiolm_pytorch.semantic.kmeans import KMeans
    root = tmp_path_factory.mktemp('hubert')
    torch.manual_seed(0)
    config = transformers.HubertConfig(hidden_size = 16, num_hidden_layers = 1, num_attention_heads = 2,
                                       intermediate_size = 16, conv_dim = (8, 8), conv_stride = (5, 4),
                                       conv_kernel = (10, 4), num_conv_pos_embeddings = 4,
                                       num_conv_pos_embedding_groups = 2)
    transformers.HubertModel(config).save_pretrained(root / 'model')
    KMeans(torch.randn(8, 16)).save(root / 'km.safetensors')
    return HubertWithKmeans(root / 'model', root / 'km.safetensors', output_layer = 1)


def test_hubert_rejects_bad_shapes_and_short_audio(hubert):
    with pytest.raises(ValueError, match = 'empty waveform'):
        hubert(torch.zeros(1, 0))
    with pytest.raises(ValueError, match = r'\(b, n\)'):
        hubert(torch.zeros(1, 1, 1, 800))


@pytest.mark.parametrize('wave', [torch.full((1, 800), NAN), torch.randint(-3000, 3000, (1, 800)), torch.zeros(0, 800)],
                         ids = ['nan', 'int', 'batch_zero'])
def test_tokenizer_called_directly_rejects_nan_int_and_empty_audio(hubert, wave):
    with pytest.raises(ValueError):
        hubert(wave)
