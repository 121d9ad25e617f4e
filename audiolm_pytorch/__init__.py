"""AudioLM family in PyTorch: SoundStream, semantic / coarse / fine transformers, AudioLM, SoundStorm, MusicLM.

Public names are resolved lazily (PEP 562) so that ``import audiolm_pytorch`` stays fast and
heavy optional modules (``transformers``, ``accelerate``) load only when a name that needs them is used.
Importing this package has no side effects on ``warnings``, ``logging`` or any other global state.
"""

from importlib import import_module

from audiolm_pytorch.version import __version__

# public name -> submodule that defines it
_PUBLIC_NAMES = {
    # audio and data
    'load_audio': 'audio', 'save_audio': 'audio', 'resample': 'audio', 'MelSpectrogram': 'audio',
    'LoadedAudio': 'audio', 'mel_filterbank': 'audio', 'stft_magnitude': 'audio', 'AudioDecodeError': 'audio',
    'SoundDataset': 'data', 'TextAudioDataset': 'data', 'get_dataloader': 'data',
    'SkippedAudioWarning': 'data', 'split_text_audio': 'data',
    # codecs
    'SoundStream': 'codecs.soundstream', 'AudioLMSoundStream': 'codecs.soundstream',
    'MusicLMSoundStream': 'codecs.soundstream',
    'EncodecWrapper': 'codecs.pretrained', 'DacWrapper': 'codecs.pretrained', 'MimiWrapper': 'codecs.pretrained',
    # semantic tokenizers
    'HubertWithKmeans': 'semantic.hubert_kmeans', 'W2VBertWithKmeans': 'semantic.hubert_kmeans',
    'FairseqVQWav2Vec': 'semantic.vq_wav2vec', 'SpectralKmeansTokenizer': 'semantic.spectral',
    'fit_kmeans': 'semantic.kmeans_fit',
    # language models
    'SemanticTransformer': 'lm.semantic', 'SemanticTransformerWrapper': 'lm.semantic',
    'CoarseTransformer': 'lm.coarse', 'CoarseTransformerWrapper': 'lm.coarse',
    'FineTransformer': 'lm.fine', 'FineTransformerWrapper': 'lm.fine',
    'AudioLM': 'audiolm', 'get_embeds': 'lm.embeds',
    # trainers
    'SoundStreamTrainer': 'trainers.soundstream',
    'SemanticTransformerTrainer': 'trainers.transformers', 'CoarseTransformerTrainer': 'trainers.transformers',
    'FineTransformerTrainer': 'trainers.transformers',
    'SoundStormTrainer': 'trainers.soundstorm', 'MuLaNTrainer': 'trainers.mulan',
    # soundstorm
    'SoundStorm': 'soundstorm', 'ConformerWrapper': 'soundstorm', 'Conformer': 'nn.conformer',
    'SemanticToAudio': 'soundstorm',
    # musiclm
    'AudioSpectrogramTransformer': 'musiclm.mulan', 'TextTransformer': 'musiclm.mulan',
    'MuLaN': 'musiclm.mulan', 'MuLaNEmbedQuantizer': 'musiclm.mulan', 'MusicLM': 'musiclm.musiclm',
    'SigmoidContrastiveLearning': 'musiclm.contrastive', 'SoftmaxContrastiveLearning': 'musiclm.contrastive',
}

__all__ = ['__version__', *_PUBLIC_NAMES]


def __getattr__(name):
    module_name = _PUBLIC_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(import_module(f'{__name__}.{module_name}'), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC_NAMES))
