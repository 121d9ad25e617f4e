"""Reference-keyword decisions for MuLaN, its towers, the contrastive losses and MusicLM (musiclm-pytorch 0.2.8)."""

from __future__ import annotations

from audiolm_pytorch.compat.core import Fixed, Note, Rename

_AUG = ('a mask never covers more than half of its axis here, so with the default spec_n_fft=128 (65 bins) the '
        'reference default 80 amounts to 32 bins')

TABLES = {
    'AudioSpectrogramTransformer': {
        '__init__': {
            'spec_pad': Fixed(value = 0, otherwise = 'warn',
                              note = 'no extra padding of the STFT input (pad the waveform yourself)'),
            'spec_pad_mode': Fixed(value = 'reflect', otherwise = 'warn',
                                   note = 'the centred STFT pads by reflection, as the reference default'),
            'spec_aug_freq_mask': Note(note = 'default 16 bins here vs 80 in the reference; ' + _AUG),
            'spec_aug_time_mask': Note(note = 'default 32 frames here vs 80 in the reference'),
        },
        'forward': {'x': Rename(to = 'wav')},
    },
    'MusicLM': {
        'forward': {'text': Rename(to = 'texts', note = 'a string or a list of strings')},
    },
    'MuLaNTrainer': {},
}
