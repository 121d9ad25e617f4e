"""Reference-keyword decisions for the codecs (SoundStream, EncodecWrapper) and the semantic tokenizers."""

from __future__ import annotations

from audiolm_pytorch.compat.core import (AddMethod, Fixed, Handle, Ignore, LegacyKeywordError, Note, Rename)


def _into_rq_kwargs(option: str):
    """``rq_<option>=v`` -> ``rq_kwargs[option] = v`` (what the reference passes to its residual VQ)."""
    def handle(obj, value, args, kwargs):
        if kwargs.get('use_lookup_free_quantizer') or kwargs.get('use_finite_scalar_quantizer'):
            return args, kwargs   # the reference passes these to the VQ only; LFQ / FSQ ignore them there too
        rq_kwargs = dict(kwargs.get('rq_kwargs') or {})
        rq_kwargs.setdefault(option, value)
        kwargs['rq_kwargs'] = rq_kwargs
        return args, kwargs
    return handle


_STFT_KEYS = dict(channels = 'channels', strides = 'strides', chan_mults = 'channel_mults', n_fft = 'n_fft',
                  hop_length = 'hop_length', win_length = 'win_length')


def _complex_stft_discr_kwargs(obj, value, args, kwargs):
    value = dict(value or {})
    unknown = sorted(set(value) - set(_STFT_KEYS))
    if unknown:
        raise LegacyKeywordError(
            f'SoundStream: complex_stft_discr_kwargs keys {unknown} have no equivalent here (the STFT discriminator '
            f'is real-valued); supported: {sorted(_STFT_KEYS)}, or pass stft_discriminator=dict(...) / a module')
    if not value:
        return args, kwargs
    current = kwargs.get('stft_discriminator')
    if current is not None and not isinstance(current, dict):
        raise LegacyKeywordError('SoundStream: pass complex_stft_discr_kwargs or a stft_discriminator module, not both')
    merged = dict(current or {})
    merged.update({_STFT_KEYS[k]: v for k, v in value.items()})
    kwargs['stft_discriminator'] = merged
    return args, kwargs


def _curtail_from_left(obj, value, args, kwargs):
    """Drop the samples that do not fill a whole frame from the start instead of the end."""
    if not value:
        return args, kwargs
    import torch
    from audiolm_pytorch.audio import resample
    x = args[0] if args else kwargs.get('x')
    if isinstance(x, torch.Tensor):
        input_sample_hz = kwargs.get('input_sample_hz')
        if input_sample_hz is not None and input_sample_hz != obj.target_sample_hz:
            x = resample(x, input_sample_hz, obj.target_sample_hz)
            kwargs['input_sample_hz'] = None
        x = x[..., x.shape[-1] % obj.seq_len_multiple_of:]
        args = (x, *args[1:]) if args else args
        if not args:
            kwargs['x'] = x
    return args, kwargs


def _is_denoising(obj, value, args, kwargs):
    if value:
        raise LegacyKeywordError(
            'SoundStream.forward: is_denoising=True (the FiLM-conditioned denoising path) is not implemented here; '
            'train a denoiser by passing the clean audio as target= (the loss then compares with it)')
    return args, kwargs


def _load_from_trainer_saved_obj(self, path):
    """Reference name of ``load``: trainer checkpoints (``soundstream.N.pt``) load with ``load`` directly."""
    return self.load(path)


TABLES = {
    'SoundStream': {
        '__init__': {
            'rq_stochastic_sample_codes': Handle(note = 'passed to the residual VQ as rq_kwargs["stochastic_sample_codes"]',
                                                 fn = _into_rq_kwargs('stochastic_sample_codes')),
            'rq_rotation_trick': Handle(note = 'passed to the residual VQ as rq_kwargs["rotation_trick"]',
                                        fn = _into_rq_kwargs('rotation_trick')),
            'stft_normalized': Fixed(value = False, otherwise = 'warn',
                                     note = 'STFTs of the discriminator and the mel loss are not normalized here'),
            'multi_spectral_n_ffts': Fixed(value = 512, otherwise = 'warn',
                                           note = 'the mel loss uses n_fft = max(window, 512); choose its windows with '
                                                  'multi_spectral_window_powers_of_two'),
            'attn_xpos_scale_base': Fixed(value = None, otherwise = 'warn',
                                          note = 'the local attention uses rotary positions (no xpos)'),
            'attn_dynamic_pos_bias': Fixed(value = False, otherwise = 'warn',
                                           note = 'the local attention uses rotary positions (no dynamic position bias)'),
            'use_gate_loop_layers': Fixed(value = False, otherwise = 'refuse',
                                          note = 'there are no GateLoop layers here; use the local attention '
                                                 '(use_local_attn=True, attn_depth=) for long-range context'),
            'complex_stft_discr_logits_abs': Ignore(
                note = 'the STFT discriminator is real-valued (real / imaginary parts as channels): its logits '
                       'are real, there is no complex modulus to take'),
            'pad_mode': Fixed(value = 'constant', otherwise = 'warn',
                              note = 'causal convolutions zero-pad their left edge (streamable); reflect padding '
                                     'is not implemented'),
            'complex_stft_discr_kwargs': Handle(
                note = 'mapped onto stft_discriminator=dict(...) (chan_mults -> channel_mults; channels, strides, '
                       'n_fft, hop_length, win_length); other keys are refused',
                fn = _complex_stft_discr_kwargs),
            'use_local_attn': Note(
                note = 'default False here vs True in the reference (issue 13): with the bottleneck transformers on, '
                       'the small codec sent one latent vector for every frame and did not learn content at 1000 '
                       'steps (benchmarks/RESULTS.md). Pass use_local_attn=True for them; checkpoints whose config '
                       'predates the change rebuild with them'),
            'multi_spectral_recon_loss_weight': Note(
                note = 'default 1.0 here vs 1e-5 in the reference, on a different scale: the reference sums an L1 '
                       'power-mel + L2 log-mel loss over resolutions, here an L1 magnitude-mel + log-mel loss is '
                       'averaged over resolutions. Do not copy 1e-5 over'),
        },
        'decode_from_codebook_indices': {'quantized_indices': Rename(to = 'codes')},
        'decode': {'x': Rename(to = 'latents')},
        'load_from_trainer_saved_obj': {'*method': AddMethod(fn = _load_from_trainer_saved_obj,
                                                             note = 'same as load(path)')},
        'process_input': {'curtail_from_left': Handle(note = 'drops the partial frame from the start',
                                                      fn = _curtail_from_left)},
        'forward': {
            'is_denoising': Handle(note = 'None / False accepted; True refused (no FiLM denoiser): pass the clean '
                                          'audio as target=', fn = _is_denoising, refuses = 'True'),
            'curtail_from_left': Handle(note = 'drops the partial frame from the start', fn = _curtail_from_left),
        },
    },
    'EncodecWrapper': {
        '__init__': {
            'target_sample_hz': Note(note = 'default None = read from the model; a value that disagrees with the '
                                            'loaded model raises ValueError'),
            'strides': Note(note = 'default None = read from the model; a mismatch raises ValueError'),
            'num_quantizers': Note(note = 'default None = from bandwidth; a mismatch raises ValueError'),
        },
        'forward': {'x': Rename(to = 'wave')},
        'decode_from_codebook_indices': {'quantized_indices': Rename(to = 'codes')},
    },
    'HubertWithKmeans': {
        'forward': {'flatten': Note(note = 'ids are always (b, frames); the reference ignores flatten for HuBERT too')},
    },
}
