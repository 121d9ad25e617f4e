"""The tiny configuration of ``audiolm demo`` and of the example scripts (one home for both): model sizes a CPU
trains in minutes. Scale ``dim`` / ``depth`` / ``channels`` up for real training (``examples/configs/*.yaml``).
"""

from __future__ import annotations

import copy

__all__ = ['TRAIN_CLIPS', 'PROMPT_CLIP', 'PROMPT_SECONDS', 'DEFAULT_MINUTES', 'BUDGET_SHARES',
           'RECONSTRUCTION_BEFORE', 'MAX_CONTINUATION_SECONDS', 'DEMO_CODEC_SPECTRAL', 'TINY_SOUNDSTREAM',
           'TINY_SOUNDSTREAM_TRAINER', 'TINY_TOKENIZER', 'TINY_TRANSFORMER', 'TINY_TRANSFORMER_TRAINER', 'NUM_COARSE',
           'NUM_FINE', 'DEFAULT_CONFIG', 'default_config']

# the training clips (16 kHz) and the held-out clip whose beginning primes the continuation
TRAIN_CLIPS = ('speech_0_16k.wav', 'music_0_16k.wav', 'music_2_16k.wav')
PROMPT_CLIP = 'speech_1_16k.wav'
PROMPT_SECONDS = 1.0
DEFAULT_MINUTES = 5.
# the held-out prompt's reconstruction before issue 13's changes to the demo codec, quoted in report.md for
# comparison (log-mel L1 / SI-SDR as in codecs/metrics.py, default 5-minute budget on a 2-core CPU): the issue's
# figure; PyTorch's default conv init beside the variance-preserving one (same machine and load, 2026-12-06: 346
# codec steps); the STFT discriminator + gradient penalty every 4 steps beside the discriminator-free codec (same
# machine and load, 2026-12-06: 326 codec steps against 475; benchmarks/RESULTS.md "The demo's codec"); the
# waveform-conv codec (8 channels, lr 1e-3) beside the spectral front end and head (same machine and load, 2026-12-06:
# 559 codec steps against 773; benchmarks/RESULTS.md "A spectral front end and head for small codecs")
RECONSTRUCTION_BEFORE = dict(log_mel_l1 = 1.32, torch_init_log_mel_l1 = 1.564, torch_init_si_sdr = -17.47,
                             discriminator_log_mel_l1 = 1.546, discriminator_si_sdr = -8.25,
                             conv_codec_log_mel_l1 = 1.473, conv_codec_si_sdr = -4.20)
MAX_CONTINUATION_SECONDS = 3.0

# share of the budget per stage; the rest (5%) absorbs plots and the report. The codec gets the most: it needs a
# few hundred steps before its reconstructions follow the input, and every later stage hears through it.
BUDGET_SHARES = dict(soundstream = 0.52, tokenizer = 0.02, semantic = 0.07, coarse = 0.13, fine = 0.12, generate = 0.09)

TINY_SOUNDSTREAM = dict(
    codebook_size = 64, rq_num_quantizers = 4, channels = 8, strides = [2, 4, 5, 8], channel_mults = [1, 2, 4, 8],
    codebook_dim = 32, use_local_attn = False,
    discr_multi_scales = [],       # the STFT discriminator only: the waveform ones cost 2x time
    stft_discriminator = dict(channels = 8, channel_mults = [1, 2, 2, 4], n_fft = 512, win_length = 512,
                              hop_length = 128, strides = [[1, 2], [2, 2], [1, 2], [2, 2]]),
    multi_spectral_window_powers_of_two = [6, 7, 8, 9, 10], multi_spectral_n_mels = 32, target_sample_hz = 16000)
TINY_SOUNDSTREAM_TRAINER = dict(batch_size = 4, data_max_length_seconds = 0.5, lr = 1e-3, grad_accum_every = 1,
                                use_ema = False)
TINY_TOKENIZER = dict(codebook_size = 32, target_sample_hz = 16000, frame_hz = 50, n_mels = 32)
TINY_TRANSFORMER = dict(dim = 64, depth = 2, heads = 4, dim_head = 16)
TINY_TRANSFORMER_TRAINER = dict(batch_size = 4, data_max_length_seconds = 2.0, lr = 1e-3)
NUM_COARSE, NUM_FINE = 2, 2

# the demo's codec reads its input through a causal STFT front end and writes its output through a causal
# inverse-STFT head (hop 40, window 80) instead of the thin first / last waveform conv blocks, 16 channels: in the
# same CPU time its held-out reconstruction follows the prompt's spectral envelope (log-mel L1 ~1.0 against ~1.5
# for the convolutional codec at 600 steps; benchmarks/RESULTS.md "A spectral front end and head for small codecs")
DEMO_CODEC_SPECTRAL = dict(channels = 16, stft_encoder_hop = 40, stft_encoder_n_fft = 80, istft_decoder_hop = 40,
                           istft_decoder_n_fft = 80)

# ``audiolm demo``'s layout (``run_demo(config = ...)`` overrides merge into it); every entry is its own dict (a deep
# copy keeps shared dicts shared, so an override of one stage would otherwise reach the others)
DEFAULT_CONFIG = dict(
    # the demo's codec trains on its reconstruction losses alone: at a few hundred CPU steps the STFT discriminator
    # and its gradient penalty cost ~30% of every step and made the held-out reconstruction worse, at equal steps and
    # at equal time (issue 13, benchmarks/RESULTS.md "The demo's codec"); the example scripts keep the discriminator
    soundstream = dict(model = dict(copy.deepcopy(TINY_SOUNDSTREAM), stft_discriminator = False, **DEMO_CODEC_SPECTRAL),
                       trainer = dict(TINY_SOUNDSTREAM_TRAINER)),
    tokenizer = dict(TINY_TOKENIZER),
    semantic = dict(model = dict(TINY_TRANSFORMER), trainer = dict(TINY_TRANSFORMER_TRAINER)),
    coarse = dict(model = dict(num_coarse_quantizers = NUM_COARSE, **TINY_TRANSFORMER),
                  trainer = dict(TINY_TRANSFORMER_TRAINER)),
    fine = dict(model = dict(num_coarse_quantizers = NUM_COARSE, num_fine_quantizers = NUM_FINE, **TINY_TRANSFORMER),
                trainer = dict(TINY_TRANSFORMER_TRAINER)),
    generate = dict(),    # AudioLM's per-stage sampling defaults (lm.sampling.STAGE_SAMPLING_DEFAULTS)
)


def default_config() -> dict:
    """A deep copy of ``DEFAULT_CONFIG`` (safe to modify)."""
    return copy.deepcopy(DEFAULT_CONFIG)
