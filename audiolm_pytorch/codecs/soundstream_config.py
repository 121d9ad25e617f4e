"""SoundStream's configuration outside the model: the checks on constructor arguments, the presets of the
AudioLM / MusicLM papers and ``LEGACY_RECIPE`` (the training recipe of versions <= 0.1.0).

Data and pure functions only: ``soundstream.py`` imports from here, never the other way round.
"""

from __future__ import annotations

import math

from audiolm_pytorch.utils import exists

# SoundStream as configured for AudioLM (16 kHz, 320 samples per frame, 12 quantizers) and MusicLM (24 kHz, 480
# samples per frame, 12 quantizers): the defaults of ``AudioLMSoundStream`` / ``MusicLMSoundStream``.
AUDIOLM_PRESET = dict(strides = (2, 4, 5, 8), target_sample_hz = 16000, rq_num_quantizers = 12)
MUSICLM_PRESET = dict(strides = (3, 4, 5, 8), target_sample_hz = 24000, rq_num_quantizers = 12)

# The training recipe of versions <= 0.1.0. Old checkpoints load and decode as before: weight normalisation
# converts exactly when a checkpoint loads, the init only shapes a new model, and a stored config without
# ``use_local_attn`` rebuilds with the bottleneck transformers (``SoundStream.legacy_defaults``).
# ``SoundStream(**{**old_config, **LEGACY_RECIPE})`` also trains exactly as those versions did.
LEGACY_RECIPE = dict(multi_spectral_loss_kind = 'soundstream', recon_loss_weight = 1., feature_loss_weight = 100.,
                     rq_quantize_dropout_prob = None,
                     rq_dead_code_threshold = None, discr_weight_norm = False, grad_penalty_per_logit = False,
                     conv_init = 'torch_default', use_local_attn = True)


def validate_config(strides, channel_mults, codebook_dim, codebook_size, num_quantizers, groups, cutoff,
                    use_lfq, use_fsq, fsq_levels, recon_loss_type, target_sample_hz, input_channels, activation):
    """Raise a ValueError naming the fix for an inconsistent ``SoundStream`` configuration."""
    if use_lfq and use_fsq:
        raise ValueError('use_lookup_free_quantizer and use_finite_scalar_quantizer cannot both be set: pick one')
    if use_fsq and not fsq_levels:
        raise ValueError('use_finite_scalar_quantizer needs finite_scalar_quantizer_levels, e.g. [8, 5, 5, 5]')
    if use_fsq and exists(codebook_size) and codebook_size != math.prod(fsq_levels):
        raise ValueError(f'with FSQ the codebook size is prod(levels) = {math.prod(fsq_levels)}; '
                         f'got codebook_size={codebook_size}: drop codebook_size or change the levels')
    if not use_fsq and not exists(codebook_size):
        raise ValueError('codebook_size is required (e.g. SoundStream(codebook_size=1024, ...)) unless '
                         'use_finite_scalar_quantizer=True, where it is derived from the levels')
    if use_lfq and (codebook_size & (codebook_size - 1)) != 0:
        raise ValueError(f'lookup-free quantization needs a power-of-two codebook_size, got {codebook_size}')
    if not use_fsq and codebook_size < 2:
        raise ValueError(f'codebook_size must be at least 2, got {codebook_size}')
    if len(strides) == 0 or len(strides) != len(channel_mults):
        raise ValueError(f'strides {strides} and channel_mults {channel_mults} must be non-empty and of equal length')
    if any(s < 1 for s in strides):
        raise ValueError(f'strides must be positive, got {strides}')
    if num_quantizers < 1 or groups < 1:
        raise ValueError(f'rq_num_quantizers and rq_groups must be >= 1, got {num_quantizers} and {groups}')
    if codebook_dim % groups:
        raise ValueError(f'codebook_dim ({codebook_dim}) must be divisible by rq_groups ({groups})')
    if num_quantizers > 1 and not 0 <= cutoff < num_quantizers:
        raise ValueError(f'quantize_dropout_cutoff_index must be in [0, rq_num_quantizers), got {cutoff}')
    if activation not in ('elu', 'snake'):
        raise ValueError(f"activation must be 'elu' or 'snake', got {activation!r}")
    if recon_loss_type not in ('l1', 'l2'):
        raise ValueError(f"recon_loss_type must be 'l1' or 'l2', got {recon_loss_type!r}")
    if target_sample_hz <= 0 or input_channels < 1:
        raise ValueError('target_sample_hz and input_channels must be positive')