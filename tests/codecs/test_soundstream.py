"""SoundStream: API shapes, variable bitrate, tokenize/decode equivalence, training on a real clip, bad input,
checkpoints, presets and the seed configs."""

import time

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolm_pytorch import AudioLMSoundStream, MusicLMSoundStream, SoundStream, load_audio
from audiolm_pytorch.audio import LoadedAudio
from audiolm_pytorch.codecs.base import Codec
from audiolm_pytorch.codecs.soundstream import LossBreakdown, TrainingLosses
from tests.helpers import INF, NAN

TINY = dict(codebook_size = 64, rq_num_quantizers = 4, channels = 8, channel_mults = (2, 4, 8), strides = (2, 4, 4),
            codebook_dim = 32, attn_window_size = 16, attn_heads = 2, attn_dim_head = 16, use_local_attn = True,
            stft_discriminator = dict(channels = 4, n_fft = 256, hop_length = 64, win_length = 256),
            multi_scale_discr_kwargs = dict(channels = 4, chan_max = 32), multi_spectral_window_powers_of_two = (6, 7, 8))


def tiny(**kwargs):
    return SoundStream(**{**TINY, **kwargs})


def warm_up(model, steps = 2, n = 1024):
    """A couple of training forwards so k-means initialises the codebooks."""
    model.train()
    for _ in range(steps):
        model(torch.randn(2, n) * 0.1, return_codes_only = True)
    model.eval()
    return model


def test_forward_shapes_and_losses():
    model = tiny()
    assert isinstance(model, Codec)
    assert model.downsample_factor == model.seq_len_multiple_of == 32
    assert (model.num_quantizers, model.codebook_size, model.rq_groups, model.target_sample_hz) == (4, 64, 1, 16000)
    assert model.configs['codebook_size'] == 64

    x = torch.randn(2, 1000) * 0.1          # cut to 992 = 31 frames
    loss, breakdown = model(x, return_loss_breakdown = True)
    assert isinstance(breakdown, LossBreakdown) and breakdown._fields[0] == 'recon'
    assert loss.ndim == 0 and all(torch.isfinite(t) for t in breakdown)
    loss.backward()
    assert all(p.grad is None for p in model.discriminator_parameters())   # generator loss never trains D

    model.zero_grad()
    discr_loss = model(x, return_discr_loss = True, apply_grad_penalty = True)
    discr_loss.backward()
    assert all(p.grad is None for p in model.non_discr_parameters())
    names = [name for name, _ in model(x, return_discr_losses_separately = True)]
    assert names == ['scale:1', 'scale:0.5', 'scale:0.25', 'stft']

    losses = model(x, return_all_losses = True, apply_grad_penalty = True)
    assert isinstance(losses, TrainingLosses) and 'grad_penalty' in losses.discr_breakdown
    model.zero_grad()
    (losses.generator + losses.discriminator).backward()
    assert all(p.grad is not None for p in model.discriminator_parameters())

    latents, codes, commit = model(x, return_encoded = True)
    assert latents.shape == (2, 31, 32) and codes.shape == (2, 31, 4) and commit.ndim == 0
    assert model(x, return_codes_only = True).shape == (2, 31, 4)

    model.eval()
    assert model(torch.randn(1000), return_recons_only = True).shape == (1, 992)
    assert model(x, return_recons_only = True).shape == (2, 1, 992)
    assert model(x[:, None], return_recons_only = True).shape == (2, 1, 992)
    params = set(map(id, model.non_discr_parameters())) | set(map(id, model.discriminator_parameters()))
    assert params == set(map(id, model.parameters()))


QUANTIZERS = {
    'rvq': {},
    'grouped_rvq': dict(rq_groups = 2),
    'lfq': dict(use_lookup_free_quantizer = True),
    'fsq': dict(use_finite_scalar_quantizer = True, finite_scalar_quantizer_levels = (4, 4, 4), codebook_size = None),
}


@pytest.mark.parametrize('name', list(QUANTIZERS))
def test_tokenize_decode_matches_forward(name):
    model = warm_up(tiny(**QUANTIZERS[name]))
    x = torch.randn(2, 640) * 0.1
    codes = model.tokenize(x)
    assert codes.shape == (2, 20, 4 * model.rq_groups) and codes.dtype == torch.long
    assert ((codes >= 0) & (codes < model.codebook_size)).all()
    with torch.no_grad():
        recon = model(x, return_recons_only = True)
        decoded = model.decode_from_codebook_indices(codes)
        latents, codes_enc, _ = model(x, return_encoded = True)
        assert torch.allclose(model.decode(latents), recon, atol = 1e-5)
    assert torch.equal(codes_enc, codes)
    assert torch.allclose(decoded, recon, atol = 1e-5, rtol = 1e-4)
    # variable bitrate: the first k levels decode, to the same length
    coarse = model.tokenize(x, num_quantizers = 2)
    assert coarse.shape == (2, 20, 2 * model.rq_groups)
    assert torch.equal(coarse.view(2, 20, model.rq_groups, 2), codes.view(2, 20, model.rq_groups, 4)[..., :2])
    assert model.decode_from_codebook_indices(coarse).shape == recon.shape


def held_out_style_distance(model, wave):
    """Eval-mode log10-mel L1 of the reconstruction (averaged over windows 64..2048): a fixed metric, whatever
    the codec's own loss."""
    from audiolm_pytorch.codecs.losses import MultiResolutionMelLoss
    metric = MultiResolutionMelLoss(sample_hz = 16000, window_powers_of_two = range(6, 12), kind = 'log_l1')
    was_training = model.training
    model.eval()
    with torch.no_grad():
        recon = model(wave, return_recons_only = True)
        distance = metric(recon, model.process_input(wave)).item()
    model.train(was_training)
    return distance


@pytest.fixture(scope = 'module')
def trained_on_speech():
    """A tiny model trained briefly (reconstruction + mel) on one real speech clip, quantizer dropout on."""
    path = __import__('pathlib').Path(__file__).parents[1] / 'assets' / 'speech_0_16k.wav'
    wave = load_audio(path, target_sample_hz = 16000).wave[:, 4000:12000]
    torch.manual_seed(0)
    model = tiny(adversarial_loss_weight = 0., feature_loss_weight = 0., quantize_dropout_cutoff_index = 0,
                 stft_discriminator = False, discr_multi_scales = (), multi_spectral_window_powers_of_two = range(6, 12))
    opt = torch.optim.Adam(model.non_discr_parameters(), lr = 3e-3)
    distances, start = [held_out_style_distance(model, wave)], time.process_time()
    for _ in range(60):
        loss = model(wave)
        opt.zero_grad()
        loss.backward()
        opt.step()
    distances.append(held_out_style_distance(model, wave))
    return model.eval(), wave, distances, time.process_time() - start


def test_overfits_one_real_clip(trained_on_speech):
    # 60 steps are the "CPU-minute" budget of the issue: ~14 CPU-s on the 2-core dev VM with one thread. The time
    # itself is not asserted (speed goals live in benchmarks/; CPU time inflates with OpenMP spinning on a busy box).
    # Measured with a fixed eval-mode metric (log-mel L1), not the training loss: the default mel loss became a
    # log-mel L1 (issue 13), and with per-example quantizer dropout the training loss of a batch of one is noisy.
    _, _, distances, _ = trained_on_speech
    assert distances[-1] <= 0.7 * distances[0], distances


def test_error_decreases_with_more_quantizers(trained_on_speech):
    model, wave, _, _ = trained_on_speech
    with torch.no_grad():
        latents = model.encode(model.process_input(wave))
        unquantized = model.decode(latents)                 # what the decoder makes of the exact latents
        codes = model.tokenize(wave)
        latent_errors, wave_errors, mel_errors = [], [], []
        for k in range(1, model.num_quantizers + 1):
            latent_errors.append((latents - model.codes_to_latents(codes[..., :k])).pow(2).mean().item())
            recon = model.decode_from_codebook_indices(model.tokenize(wave, num_quantizers = k))
            wave_errors.append((recon - unquantized).pow(2).mean().item())
            mel_errors.append(model.mel_loss(recon, unquantized).item())
    assert all(b < a for a, b in zip(latent_errors, latent_errors[1:])), latent_errors
    # decoded audio: the error that quantizing to k levels adds (against decoding the exact latents) shrinks with
    # k, and clearly so from one level to all. Since issue 13 the default loss weighs the waveform 10x against an
    # O(1) log-mel term, so the waveform error is the one that falls level by level (measured: 4.0e-4, 2.3e-4,
    # 1.4e-4, 1.1e-4); the mel error falls clearly from one level to all (0.39 -> 0.13) but not at every level
    # after 60 steps (0.091, 0.090, 0.133). (Against the input itself, a decoder trained for only 60 steps is too
    # far off for the bitrate to show reliably.) The 60 steps differ with the thread count (float reductions): with
    # 2 threads the mel error fell 0.265 -> 0.136, so the mel bound leaves room; decoding k levels the same as one
    # (a broken num_quantizers) still fails it.
    assert all(b < a for a, b in zip(wave_errors, wave_errors[1:])), wave_errors
    assert wave_errors[-1] < 0.5 * wave_errors[0], wave_errors
    assert mel_errors[-1] < 0.7 * mel_errors[0], mel_errors


def test_bad_input_raises_helpful_errors():
    model = tiny().eval()
    with pytest.raises(ValueError, match = 'shorter than one codec frame'):
        model.tokenize(torch.randn(1, 20))
    with pytest.raises(ValueError, match = 'NaN'):
        model.tokenize(torch.full((1, 640), float('nan')))
    with pytest.raises(ValueError, match = 'shape'):
        model.tokenize(torch.randn(2, 3, 640))
    with pytest.raises(ValueError, match = 'floating-point'):
        model.tokenize(torch.zeros(1, 640, dtype = torch.int16))
    loaded = load_audio(__import__('pathlib').Path(__file__).parents[1] / 'assets' / 'speech_0_24k.wav')
    with pytest.raises(ValueError, match = 'input_sample_hz'):
        model.tokenize(loaded)
    codes_resampled = model.tokenize(loaded, input_sample_hz = loaded.sample_hz)
    assert codes_resampled.shape[1] == int(loaded.wave.shape[-1] * 16000 / 24000) // 32
    with pytest.raises(ValueError, match = 'levels'):
        model.decode_from_codebook_indices(torch.zeros(1, 5, 6, dtype = torch.long))
    with pytest.raises(ValueError, match = r'\[0, 64\)'):
        model.decode_from_codebook_indices(torch.full((1, 5, 4), 64))
    with pytest.raises(ValueError, match = 'num_quantizers'):
        model.tokenize(torch.randn(1, 640), num_quantizers = 5)


@pytest.mark.parametrize('kwargs, match', [
    (dict(use_lookup_free_quantizer = True, use_finite_scalar_quantizer = True, finite_scalar_quantizer_levels = (4, 4)), 'both'),
    (dict(codebook_size = None), 'codebook_size is required'),
    (dict(use_finite_scalar_quantizer = True), 'levels'),
    (dict(use_lookup_free_quantizer = True, codebook_size = 100), 'power-of-two'),
    (dict(strides = (2, 4)), 'equal length'),
    (dict(rq_groups = 3), 'divisible'),
    (dict(quantize_dropout_cutoff_index = 4), 'cutoff'),
    (dict(discr_multi_scales = (1, 0.3)), 'integer'),
    (dict(stft_encoder_hop = 3), r'stft_encoder_hop must be a product of the first encoder strides .* one of \[2, 8, 32\]'),
    (dict(istft_decoder_hop = 4), r'istft_decoder_hop must be a product'),
    (dict(istft_decoder_hop = 2, istft_decoder_n_fft = 7), 'even n_fft'),
])
def test_impossible_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match = match):
        tiny(**kwargs)


def test_checkpoint_round_trip(tmp_path):
    model = warm_up(tiny(rq_groups = 2))
    x = torch.randn(1, 640) * 0.1
    codes = model.tokenize(x)

    model.save(tmp_path / 'model.pt')
    rebuilt = SoundStream.init_and_load_from(tmp_path / 'model.pt').eval()
    assert torch.equal(rebuilt.tokenize(x), codes)

    fresh = tiny(rq_groups = 2).eval()
    fresh.load(tmp_path / 'model.pt')
    assert torch.equal(fresh.tokenize(x), codes)

    # a trainer checkpoint: EMA weights (ema_pytorch layout) are preferred over the raw ones
    ema_state = {f'ema_model.{k}': v for k, v in model.state_dict().items()}
    ema_state['initted'] = torch.tensor(True)
    trainer_pkg = tiny(rq_groups = 2).checkpoint_dict(ema_state_dict = ema_state, trainer = dict(step = 3))
    torch.save(trainer_pkg, tmp_path / 'soundstream.3.pt')
    from_trainer = SoundStream.init_and_load_from(tmp_path / 'soundstream.3.pt').eval()
    assert torch.equal(from_trainer.tokenize(x), codes)

    torch.save({'model': model.state_dict()}, tmp_path / 'legacy.pt')   # legacy: weights only
    legacy = tiny(rq_groups = 2).eval()
    legacy.load(tmp_path / 'legacy.pt')
    assert torch.equal(legacy.tokenize(x), codes)


# a causal STFT front end in place of the first encoder block, an inverse-STFT head in place of the last two decoder blocks
SPECTRAL = dict(stft_encoder_hop = 2, istft_decoder_hop = 8, istft_decoder_n_fft = 16)


def test_spectral_front_and_head_checkpoint_round_trip(tmp_path, caplog):
    model = warm_up(tiny(**SPECTRAL))
    assert [type(m).__name__ for m in (model.encoder[0], model.decoder[-1])] == ['CausalSTFTFront', 'CausalISTFTHead']
    x = torch.randn(1, 640) * 0.1
    with torch.no_grad():
        audio = model.decode_from_codebook_indices(model.tokenize(x))
    assert audio.shape == (1, 1, 640)
    model.save(tmp_path / 'model.pt')
    rebuilt = SoundStream.init_and_load_from(tmp_path / 'model.pt').eval()
    with torch.no_grad():
        assert torch.equal(rebuilt.decode_from_codebook_indices(rebuilt.tokenize(x)), audio)
    # the convolutional codec cannot silently take these weights: the log names the differing options, and the
    # state dict does not fit
    with caplog.at_level('WARNING'), pytest.raises(RuntimeError, match = 'Missing key.*encoder'):
        tiny().load(tmp_path / 'model.pt')
    assert "['istft_decoder_hop', 'istft_decoder_n_fft', 'stft_encoder_hop']" in caplog.text


def test_input_sample_hz_resamples():
    model = tiny().eval()
    x = torch.randn(1, 1920) * 0.1
    assert model(x, return_recons_only = True, input_sample_hz = 24000).shape == (1, 1, 1280)


def test_presets_and_seed_configs():
    audiolm = AudioLMSoundStream(codebook_size = 1024)
    assert (audiolm.target_sample_hz, audiolm.downsample_factor, audiolm.num_quantizers) == (16000, 320, 12)
    musiclm = MusicLMSoundStream(codebook_size = 1024)
    assert (musiclm.target_sample_hz, musiclm.downsample_factor, musiclm.num_quantizers) == (24000, 480, 12)

    seed_000 = SoundStream(codebook_size = 1024, rq_num_quantizers = 8)
    assert seed_000.seq_len_multiple_of == 320
    seed_001 = SoundStream(codebook_size = 1024, rq_num_quantizers = 12, attn_window_size = 128, attn_depth = 2).eval()
    assert seed_001(torch.randn(2, 10080), return_recons_only = True).shape == (2, 1, 9920)
    assert seed_001.tokenize(torch.randn(2, 10080)).shape == (2, 31, 12)


def test_discriminators_under_bf16_autocast():
    model = tiny(use_multi_period_discr = True, multi_period_discr_periods = (2, 3))
    x = torch.randn(2, 640) * 0.1
    with torch.autocast(device_type = 'cpu', dtype = torch.bfloat16):
        losses = model(x, return_all_losses = True)
    assert torch.isfinite(losses.generator) and torch.isfinite(losses.discriminator)
    assert any(name.startswith('period:') for name in losses.discr_breakdown)
    (losses.generator + losses.discriminator).backward()
    assert not any(p.is_complex() for p in model.parameters())


def test_spectral_front_and_head_under_bf16_autocast_and_in_half_precision():
    model = tiny(**SPECTRAL)
    x = torch.randn(2, 640) * 0.1
    with torch.autocast(device_type = 'cpu', dtype = torch.bfloat16):
        losses = model(x, return_all_losses = True)
    assert torch.isfinite(losses.generator)
    losses.generator.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.non_discr_parameters() if p.grad is not None)
    # a codec cast to bfloat16 decodes in its own dtype, whole or streamed
    model = warm_up(model).to(torch.bfloat16)
    codes = model.tokenize(x.to(torch.bfloat16))
    with torch.no_grad():
        audio = model.decode_from_codebook_indices(codes)
        streamed, state = model.decode_chunk(codes, model.init_decoder_state(batch_size = 2))
    assert audio.dtype == streamed.dtype == state.conv[-1].dtype == torch.bfloat16
    assert torch.isfinite(audio.float()).all()


def test_eval_tokenize_never_initialises_codebooks_from_its_input():
    # levels that training has not reached yet must not be k-means-initialised by whatever is tokenized first
    model = tiny().eval()
    state = {k: v.clone() for k, v in model.rq.state_dict().items()}
    first = model.tokenize(torch.randn(1, 2048) * 0.1)
    assert all(torch.equal(state[k], v) for k, v in model.rq.state_dict().items())
    again = model.tokenize(torch.randn(1, 2048) * 0.5)  # another input does not change the model either
    assert all(torch.equal(state[k], v) for k, v in model.rq.state_dict().items())
    assert first.shape == again.shape
    # training still initialises them
    model.train()
    model(torch.randn(2, 2048) * 0.1, return_codes_only = True)
    assert any(not torch.equal(state[k], v) for k, v in model.rq.state_dict().items())


# ---- bad input (NaN / int PCM / wrong shapes / empty, bad codes, streaming) ----------------------------------------

@pytest.fixture(scope = 'module')
def codec():
    from audiolm_pytorch import SoundStream
    torch.manual_seed(0)
    return SoundStream(codebook_size = 16, rq_num_quantizers = 2, channels = 4, strides = (2, 2), channel_mults = (1, 2),
                       codebook_dim = 8, attn_window_size = 4, attn_heads = 1, attn_dim_head = 8, use_local_attn = True,
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


# ---- stereo items, tokenize never fits the codebooks ---------------------------------------------------------------

TINY_NO_DISCR = dict(codebook_size = 32, rq_num_quantizers = 3, channels = 4, channel_mults = (2, 4), strides = (2, 4),
            codebook_dim = 16, attn_window_size = 12, attn_heads = 2, attn_dim_head = 8, attn_depth = 1,
            use_local_attn = True, stft_discriminator = False, discr_multi_scales = ())


def test_stereo_loaded_audio_is_one_item_not_a_batch(tmp_path):
    # a LoadedAudio wave is (channels, n): a stereo file must not be read as a batch of two mono signals
    stereo = (np.random.default_rng(0).standard_normal((1600, 2)) * 0.1).astype('float32')
    sf.write(tmp_path / 'stereo.wav', stereo, 16000)
    loaded = load_audio(tmp_path / 'stereo.wav', mono = False)
    assert loaded.wave.shape == (2, 1600)

    mono_codec = SoundStream(**TINY_NO_DISCR).eval()
    with pytest.raises(ValueError, match = 'mono=True'):
        mono_codec.tokenize(loaded)

    stereo_codec = SoundStream(**TINY_NO_DISCR, input_channels = 2).eval()
    codes = stereo_codec.tokenize(loaded)
    assert codes.shape == (1, 1600 // stereo_codec.downsample_factor, 3)
    assert torch.equal(codes, stereo_codec.tokenize(loaded.wave[None]))

    mono = load_audio(tmp_path / 'stereo.wav')                     # (1, n): one mono item
    assert torch.equal(mono_codec.tokenize(mono), mono_codec.tokenize(mono.wave))


def test_tokenize_in_train_mode_never_initialises_codebooks():
    # tokenize is inference: even on a model left in train mode it must not k-means-initialise codebooks from
    # its input (the same checkpoint would then give different codes depending on what was tokenized first)
    model = SoundStream(**TINY_NO_DISCR).train()
    state = {k: v.clone() for k, v in model.rq.state_dict().items()}
    model.tokenize(torch.randn(1, 800) * 0.1)
    stream_state = model.init_encoder_state()
    model.encode_chunk(torch.randn(1, 80) * 0.1, stream_state)
    assert all(torch.equal(state[k], v) for k, v in model.rq.state_dict().items())
    assert model.training and model.rq.training                   # modes restored
    model(torch.randn(2, 800) * 0.1, return_codes_only = True)   # a training forward still initialises
    assert any(not torch.equal(state[k], v) for k, v in model.rq.state_dict().items())


def test_attention_settings_without_the_transformers_warn_once():
    """The bottleneck transformers are off by default (issue 13): settings a reference script passes for them
    warn (once per process) instead of being dropped without a word; with ``use_local_attn=True`` they build."""
    import warnings
    from audiolm_pytorch.compat import LegacyKeywordWarning, reset_warnings
    small = dict(codebook_size = 16, rq_num_quantizers = 2, channels = 4, strides = (2, 2), channel_mults = (1, 2),
                 codebook_dim = 8, stft_discriminator = False, discr_multi_scales = ())
    reset_warnings()
    with pytest.warns(LegacyKeywordWarning, match = r'attn_depth=2: no effect.*use_local_attn=True'):
        model = SoundStream(**small, attn_depth = 2)
    assert model.encoder_attn is None
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        SoundStream(**small, attn_depth = 2)                                     # once per process
        SoundStream(**small, attn_depth = 0)                                     # asks for none: nothing to say
        built = SoundStream(**small, attn_depth = 2, attn_heads = 2, attn_dim_head = 4, use_local_attn = True)
    assert len(built.encoder_attn.layers) == 2
    reset_warnings()
