"""The stage registry: which model, trainer and tokenizers each AudioLM stage needs, and how a stage is built.

One home for what the ``audiolm train`` / ``audiolm generate`` commands and ``audiolm demo`` share:

- ``build_stage(stage, model_kwargs, codec = ..., wav2vec = ...)``: the stage model (semantic / coarse / fine
  transformer) with the token counts its tokenizers determine filled in, its trainer class and the tokenizers
  the trainer takes after the model;
- ``build_trainer(stage, config, data = ...)``: the same from a config dict (``audiolm train``);
- ``build_audiolm(config)``: ``AudioLM`` from the three transformer checkpoints (``audiolm generate``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from audiolm_pytorch.cli_config import GENERATE_KEYS, ConfigError, construct, load_codec, load_semantic_tokenizer

logger = logging.getLogger(__name__)

STAGES = ('soundstream', 'semantic', 'coarse', 'fine')
TRANSFORMER_STAGES = ('semantic', 'coarse', 'fine')
TRAIN_SECTIONS = ('model', 'trainer', 'codec', 'wav2vec')
STAGE_SECTIONS = dict(
    soundstream = ('model', 'trainer'),
    semantic = ('model', 'trainer', 'wav2vec'),
    coarse = ('model', 'trainer', 'codec', 'wav2vec'),
    fine = ('model', 'trainer', 'codec'),
)
# which tokenizers each transformer stage's trainer takes after the model, in order
STAGE_TOKENIZERS = dict(semantic = ('wav2vec',), coarse = ('codec', 'wav2vec'), fine = ('codec',))

# defaults the config file / --set override
MODEL_DEFAULTS = dict(
    soundstream = dict(codebook_size = 1024, rq_num_quantizers = 8),
    semantic = dict(dim = 512, depth = 6),
    coarse = dict(dim = 512, depth = 6),     # num_coarse_quantizers: min(3, codec levels - 1) unless given
    fine = dict(dim = 512, depth = 6),       # num_fine_quantizers: the codec's remaining levels unless given
)
TRAINER_DEFAULTS = dict(
    soundstream = dict(num_train_steps = 10000, batch_size = 4, data_max_length_seconds = 1.),
    semantic = dict(num_train_steps = 10000, batch_size = 4, data_max_length_seconds = 10.),
    coarse = dict(num_train_steps = 10000, batch_size = 4, data_max_length_seconds = 10.),
    fine = dict(num_train_steps = 10000, batch_size = 4, data_max_length_seconds = 10.),
)


def _check_stage(stage: str, allowed = STAGES):
    if stage not in allowed:
        raise ValueError(f'unknown stage {stage!r}; expected one of {list(allowed)}')


def model_class(stage: str):
    """The model class of ``stage`` (``SoundStream`` or one of the three transformers)."""
    _check_stage(stage)
    if stage == 'soundstream':
        from audiolm_pytorch.codecs.soundstream import SoundStream
        return SoundStream
    if stage == 'semantic':
        from audiolm_pytorch.lm.semantic import SemanticTransformer
        return SemanticTransformer
    if stage == 'coarse':
        from audiolm_pytorch.lm.coarse import CoarseTransformer
        return CoarseTransformer
    from audiolm_pytorch.lm.fine import FineTransformer
    return FineTransformer


def trainer_class(stage: str):
    """The trainer class of ``stage``."""
    _check_stage(stage)
    if stage == 'soundstream':
        from audiolm_pytorch.trainers.soundstream import SoundStreamTrainer
        return SoundStreamTrainer
    from audiolm_pytorch.trainers import transformers as tt
    return dict(semantic = tt.SemanticTransformerTrainer, coarse = tt.CoarseTransformerTrainer,
                fine = tt.FineTransformerTrainer)[stage]


def stage_model_kwargs(stage: str, model_kwargs: dict, *, codec = None, wav2vec = None) -> dict:
    """``model_kwargs`` plus the token counts the tokenizers determine, where absent: ``num_semantic_tokens``
    (semantic / coarse, from ``wav2vec.codebook_size``), ``codebook_size`` / ``rq_groups`` /
    ``num_coarse_quantizers`` / ``num_fine_quantizers`` (coarse / fine, from the codec's levels). ``codec`` and
    ``wav2vec`` only need those size attributes (a module, or the identity stored in a token folder)."""
    _check_stage(stage, TRANSFORMER_STAGES)
    kwargs = dict(model_kwargs)
    if stage in ('semantic', 'coarse'):
        kwargs.setdefault('num_semantic_tokens', wav2vec.codebook_size)
    if stage in ('coarse', 'fine'):
        kwargs.setdefault('codebook_size', codec.codebook_size)
        kwargs.setdefault('rq_groups', getattr(codec, 'rq_groups', 1))
        kwargs.setdefault('num_coarse_quantizers', min(3, max(1, codec.num_quantizers - 1)))
    if stage == 'fine':
        kwargs.setdefault('num_fine_quantizers', max(1, codec.num_quantizers - kwargs['num_coarse_quantizers']))
    return kwargs


def build_stage(stage: str, model_kwargs: dict, *, codec = None, wav2vec = None, sizes: dict | None = None,
                build = None):
    """``(model, trainer_cls, tokenizers)`` of a transformer stage: the model built from ``model_kwargs`` (token
    counts filled in by ``stage_model_kwargs``), its trainer class and the tokenizers the trainer takes after the
    model (``STAGE_TOKENIZERS``). ``sizes`` may give stand-ins for the size lookups (``{'codec': ..., 'wav2vec':
    ...}``) when a tokenizer is not loaded; ``build(cls, kwargs, what)`` constructs the model (default:
    ``cls(**kwargs)``)."""
    sizes = {**dict(codec = codec, wav2vec = wav2vec), **(sizes or {})}
    kwargs = stage_model_kwargs(stage, model_kwargs, codec = sizes['codec'], wav2vec = sizes['wav2vec'])
    cls = model_class(stage)
    model = build(cls, kwargs, f'model ({cls.__name__})') if build is not None else cls(**kwargs)
    tokenizers = dict(codec = codec, wav2vec = wav2vec)
    return model, trainer_class(stage), tuple(tokenizers[name] for name in STAGE_TOKENIZERS[stage])


def build_trainer(stage: str, config: dict, *, data: str, results: str | None, cpu: bool = False,
                  progress: bool = True):
    """Model + trainer for ``stage`` from a config dict (sections model / trainer / codec / wav2vec)."""
    unknown = sorted(set(config) - set(TRAIN_SECTIONS))
    if unknown:
        raise ConfigError(f'unknown config section(s) {unknown}; expected {list(TRAIN_SECTIONS)}')
    unused = sorted(k for k in set(config) - set(STAGE_SECTIONS[stage]) if config[k] is not None)
    if unused:  # e.g. a wav2vec section in a fine config (one config shared by every stage is fine): say so
        logger.warning('train %s does not use the config section(s) %s; it reads %s', stage, unused,
                       list(STAGE_SECTIONS[stage]))
    for section in ('model', 'trainer'):
        if config.get(section) is not None and not isinstance(config[section], dict):
            raise ConfigError(f'config section {section!r} must be a mapping of keyword arguments, got '
                              f'{type(config[section]).__name__}')
    if not Path(data).is_dir():
        raise FileNotFoundError(f'--data folder not found: {data}')
    model_cfg = {**MODEL_DEFAULTS[stage], **(config.get('model') or {})}
    trainer_cfg = {**TRAINER_DEFAULTS[stage], **(config.get('trainer') or {})}
    if 'data_max_length' in (config.get('trainer') or {}):
        trainer_cfg.pop('data_max_length_seconds', None)
    for key in ('folder', 'dataset', 'train_dataloader', 'tokens'):
        if key in trainer_cfg:
            raise ConfigError(f'trainer.{key} cannot be set in a config: the data comes from --data')
    # a token folder written by `audiolm prepare` trains with no tokenizer or codec loaded
    manifest = None
    if stage != 'soundstream' and (Path(data) / 'tokens.json').is_file():
        from audiolm_pytorch.tokens import read_manifest
        manifest = read_manifest(data)
    trainer_cfg.update(progress_bar = progress, **(dict(tokens = data) if manifest else dict(folder = data)))
    if results is not None:
        trainer_cfg['results_folder'] = results
    trainer_cfg.setdefault('force_clear_prev_results', False)
    if cpu:
        trainer_cfg['accelerate_kwargs'] = {**trainer_cfg.get('accelerate_kwargs', {}), 'cpu': True}

    if stage == 'soundstream':
        model = construct(model_class(stage), model_cfg, 'model (SoundStream)')
        return construct(trainer_class(stage), trainer_cfg, 'trainer', (model,))

    loaded, sizes = {}, {}
    for section in ('codec', 'wav2vec'):
        if section not in STAGE_SECTIONS[stage]:
            continue
        if config.get(section) is not None:
            load = load_codec if section == 'codec' else load_semantic_tokenizer
            loaded[section] = sizes[section] = load(config[section])
            continue
        if manifest is None:
            raise ConfigError(f'train {stage} needs a {section}: section in --config (or --set {section}=PATH)')
        # codebook sizes / levels from the token folder
        identity = manifest.get('semantic' if section == 'wav2vec' else 'codec')
        if identity is None:
            raise ConfigError(f'train {stage} needs {section} tokens, but {data} holds none: `audiolm prepare` it '
                              f'with --{section}')
        loaded[section], sizes[section] = None, SimpleNamespace(**identity)
    model, trainer_cls, tokenizers = build_stage(stage, model_cfg, **loaded, sizes = sizes, build = construct)
    return construct(trainer_cls, trainer_cfg, 'trainer', (model, *tokenizers))


def build_audiolm(config: dict):
    """``AudioLM`` from a config naming the codec, the semantic tokenizer and the three transformer checkpoints."""
    unknown = sorted(set(config) - set(GENERATE_KEYS))
    if unknown:
        raise ConfigError(f'unknown key(s) {unknown} in the AudioLM config; expected {list(GENERATE_KEYS)}')
    missing = [key for key in ('codec', *TRANSFORMER_STAGES) if not config.get(key)]
    if missing:
        raise ConfigError(f'the AudioLM config needs {", ".join(missing)}')
    from audiolm_pytorch.audiolm import AudioLM
    transformers = {}
    for stage in TRANSFORMER_STAGES:
        path = Path(config[stage])
        if not path.is_file():
            raise FileNotFoundError(f'{stage} transformer checkpoint not found: {path}')
        transformers[stage] = model_class(stage).init_and_load_from(path).eval()
    codec = load_codec(config['codec'])
    wav2vec = load_semantic_tokenizer(config['wav2vec']) if config.get('wav2vec') else None
    return AudioLM(wav2vec = wav2vec, codec = codec, semantic_transformer = transformers['semantic'],
                   coarse_transformer = transformers['coarse'], fine_transformer = transformers['fine']).eval()
