"""Read fairseq HuBERT / wav2vec 2.0 checkpoints (``hubert_base_ls960.pt``, ``wav2vec_small.pt``, ...) without
importing fairseq, and rebuild them as ``transformers`` models.

fairseq cannot be imported on Python >= 3.11, and a plain ``torch.load`` of its checkpoints unpickles
(imports) fairseq classes. Here the file is read with ``torch.load(weights_only=True)``: the few non-tensor
objects such checkpoints hold are allow-listed as inert stand-ins (``fairseq.data.dictionary.Dictionary``) or
harmless standard classes (``argparse.Namespace`` for old ``args``-style checkpoints). Nothing in the file can
run code.

The weights are then mapped one by one onto ``transformers.HubertModel`` / ``Wav2Vec2Model`` with an explicit
key map (the correspondence of transformers' own HuBERT conversion script); a missing or unexpected key or a
shape mismatch raises instead of being skipped silently.
"""

from __future__ import annotations

import argparse
import ast
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from audiolm_pytorch.utils import exists

__all__ = [
    'FairseqCheckpointError', 'FairseqDictionary', 'FairseqModel', 'read_fairseq_checkpoint', 'fairseq_configs',
    'parse_conv_feature_layers', 'transformers_config_from_fairseq', 'fairseq_to_transformers_key_map',
    'convert_state_dict', 'load_fairseq_model',
]


class FairseqCheckpointError(ValueError):
    """A file is not a fairseq checkpoint this reader understands (or its weights do not fit the model)."""


class FairseqDictionary:
    """Inert stand-in for ``fairseq.data.dictionary.Dictionary`` (the label vocabulary stored in
    ``task_state``). Unpickling it only fills ``__dict__`` with plain data (symbols, counts, indices)."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError('fairseq Dictionary state must be a dict')
        self.__dict__.update(state)

    def __len__(self):
        return len(self.__dict__.get('symbols', ()))

    def __repr__(self):
        return f'FairseqDictionary(len={len(self)})'


# (object, full name in the pickle) pairs that torch's weights-only unpickler may reconstruct
_SAFE_GLOBALS = [
    (FairseqDictionary, 'fairseq.data.dictionary.Dictionary'),
    FairseqDictionary,  # a checkpoint read here and saved again pickles the stand-in under its own name
    argparse.Namespace,  # fairseq < 0.10 stored its command-line ``args``; a Namespace only holds attributes
]

# fairseq defaults of the architecture fields (used when a checkpoint omits a key; 2021 checkpoints hold
# fewer ``cfg.model`` keys than fairseq 0.12 writes)
_FAIRSEQ_DEFAULTS = dict(
    extractor_mode = 'default',
    encoder_layers = 12,
    encoder_embed_dim = 768,
    encoder_ffn_embed_dim = 3072,
    encoder_attention_heads = 12,
    activation_fn = 'gelu',
    layer_norm_first = False,
    conv_feature_layers = '[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2',
    conv_bias = False,
    conv_pos = 128,
    conv_pos_groups = 16,
)

# pretraining heads that a feature extractor does not need
_IGNORED_PREFIXES = ('label_embs_concat', 'label_embs', 'final_proj.', 'quantizer.', 'project_q.',
                     'project_inp.', 'target_glu.')


# ----------------------------------------------------------------------------------------------------------
# reading the file
# ----------------------------------------------------------------------------------------------------------

def read_fairseq_checkpoint(path: str | os.PathLike) -> dict:
    """Load a fairseq checkpoint dict with ``torch.load(weights_only=True)`` (allow-listed stand-ins only).

    Raises:
        FileNotFoundError if ``path`` does not exist; ``FairseqCheckpointError`` for a file that is not a
        torch checkpoint, or one holding objects outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'fairseq checkpoint not found: {path}')

    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            pkg = torch.load(str(path), map_location = 'cpu', weights_only = True)
    except pickle.UnpicklingError as error:
        raise FairseqCheckpointError(
            f'{path} holds objects this safe reader does not allow ({error}). Supported are checkpoints whose '
            'non-tensor entries are plain data, a fairseq Dictionary or an argparse Namespace. To convert another '
            'file, load it once where fairseq works (Python 3.10) and re-save it as '
            "torch.save({'cfg': OmegaConf.to_container(ckpt['cfg']), 'model': ckpt['model']}, new_path)."
        ) from error
    except Exception as error:  # a non-checkpoint file fails anywhere in torch.load (KeyError, EOFError, ...)
        raise FairseqCheckpointError(
            f'{path} is not a readable torch checkpoint ({type(error).__name__}: {error}); '
            'is it truncated, or a different format?') from error

    if not isinstance(pkg, dict) or 'model' not in pkg:
        found = sorted(pkg)[:10] if isinstance(pkg, dict) else type(pkg).__name__
        raise FairseqCheckpointError(
            f'{path} is not a fairseq checkpoint: expected a dict with "model" and "cfg" (or "args"), found {found}')
    return pkg


def _as_dict(value) -> dict:
    if value is None:
        return {}
    if isinstance(value, argparse.Namespace):
        return dict(vars(value))
    if isinstance(value, dict):
        return dict(value)
    raise FairseqCheckpointError(f'cannot read a fairseq config stored as {type(value).__name__}')


def fairseq_configs(pkg: dict) -> tuple[dict, dict]:
    """``(model_cfg, task_cfg)`` as plain dicts from a checkpoint's ``cfg`` (fairseq >= 0.10, a dict) or
    ``args`` (older, an ``argparse.Namespace`` holding model and task fields together).

    Fine-tuned checkpoints (``w2v_args`` inside the model config) yield the pretrained encoder's config."""
    cfg = pkg.get('cfg')
    if exists(cfg):
        cfg = _as_dict(cfg)
        model_cfg, task_cfg = _as_dict(cfg.get('model')), _as_dict(cfg.get('task'))
    elif exists(pkg.get('args')):
        model_cfg = task_cfg = _as_dict(pkg['args'])
    else:
        raise FairseqCheckpointError('fairseq checkpoint holds neither "cfg" nor "args": cannot rebuild the model')

    inner = model_cfg.get('w2v_args')
    if exists(inner):  # fine-tuned (CTC) checkpoint: the encoder's own pretraining config is nested here
        inner = _as_dict(inner)
        if 'model' in inner:
            inner_model, inner_task = _as_dict(inner['model']), _as_dict(inner.get('task'))
        else:
            inner_model = inner_task = inner
        task_cfg = {**task_cfg, **{k: v for k, v in inner_task.items() if k in ('normalize', 'sample_rate')}}
        model_cfg = inner_model
    return model_cfg, task_cfg


def _model_kind(model_cfg: dict) -> str:
    name = str(model_cfg.get('_name') or model_cfg.get('arch') or '')
    if name.startswith('hubert'):
        return 'hubert'
    if name.startswith('wav2vec2'):
        return 'wav2vec2'
    raise FairseqCheckpointError(
        f'fairseq model type {name!r} is not supported: expected a HuBERT ("hubert") or wav2vec 2.0 ("wav2vec2") '
        'checkpoint. For vq-wav2vec use FairseqVQWav2Vec.')


# ----------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------

def _literal(node):
    """Evaluate the tiny expression language of ``conv_feature_layers``: ints, tuples, lists, ``+`` and ``*``."""
    if isinstance(node, ast.Expression):
        return _literal(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _literal(node.left), _literal(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f'unsupported expression {ast.dump(node)}')


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """``"[(512,10,5)] + [(512,3,2)] * 4"`` -> ``[(dim, kernel, stride), ...]`` without ``eval``."""
    try:
        layers = _literal(ast.parse(spec, mode = 'eval'))
        layers = [tuple(int(v) for v in layer) for layer in layers]
    except (SyntaxError, ValueError, TypeError) as error:
        raise FairseqCheckpointError(f'cannot parse conv_feature_layers {spec!r}: {error}') from error
    if not layers or any(len(layer) != 3 for layer in layers):
        raise FairseqCheckpointError(f'conv_feature_layers {spec!r} must be a list of (dim, kernel, stride)')
    return layers


def transformers_config_from_fairseq(model_cfg: dict):
    """The ``transformers`` ``HubertConfig`` / ``Wav2Vec2Config`` equivalent to a fairseq model config."""
    kind = _model_kind(model_cfg)
    cfg = {**_FAIRSEQ_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}

    if int(cfg.get('pos_conv_depth', 1)) != 1:
        raise FairseqCheckpointError('multi-layer positional convolutions (pos_conv_depth > 1, data2vec style) '
                                     'are not supported')
    if cfg.get('layer_type', 'transformer') != 'transformer':
        raise FairseqCheckpointError(f'encoder layer_type {cfg["layer_type"]!r} is not supported (only "transformer")')
    if cfg['extractor_mode'] not in ('default', 'layer_norm'):
        raise FairseqCheckpointError(f'unknown extractor_mode {cfg["extractor_mode"]!r}')

    conv_layers = parse_conv_feature_layers(cfg['conv_feature_layers'])
    kwargs = dict(
        hidden_size = int(cfg['encoder_embed_dim']),
        num_hidden_layers = int(cfg['encoder_layers']),
        num_attention_heads = int(cfg['encoder_attention_heads']),
        intermediate_size = int(cfg['encoder_ffn_embed_dim']),
        hidden_act = str(cfg['activation_fn']),
        feat_extract_norm = 'group' if cfg['extractor_mode'] == 'default' else 'layer',
        feat_extract_activation = 'gelu',  # fairseq's conv blocks always use nn.GELU
        conv_dim = [layer[0] for layer in conv_layers],
        conv_kernel = [layer[1] for layer in conv_layers],
        conv_stride = [layer[2] for layer in conv_layers],
        conv_bias = bool(cfg['conv_bias']),
        num_conv_pos_embeddings = int(cfg['conv_pos']),
        num_conv_pos_embedding_groups = int(cfg['conv_pos_groups']),
        do_stable_layer_norm = bool(cfg['layer_norm_first']),
        layer_norm_eps = 1e-5,  # torch.nn.LayerNorm default, as in fairseq
        # inference only: every dropout off (the model is also kept in eval mode)
        hidden_dropout = 0., attention_dropout = 0., activation_dropout = 0., feat_proj_dropout = 0.,
        final_dropout = 0., layerdrop = 0.,
        mask_time_prob = 0.05,  # > 0 so that ``masked_spec_embed`` exists to receive fairseq's ``mask_emb``
    )
    if kind == 'hubert':
        from transformers import HubertConfig
        return HubertConfig(feat_proj_layer_norm = True, **kwargs)
    from transformers import Wav2Vec2Config
    return Wav2Vec2Config(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------------------

def _pos_conv_targets(hf_keys: set[str]) -> tuple[str, str]:
    """Where the weight-normed positional conv's magnitude / direction live in the installed transformers:
    ``weight_g`` / ``weight_v`` (old ``nn.utils.weight_norm``) or ``parametrizations.weight.original0/1``."""
    base = 'encoder.pos_conv_embed.conv.'
    if f'{base}parametrizations.weight.original0' in hf_keys:
        return f'{base}parametrizations.weight.original0', f'{base}parametrizations.weight.original1'
    if f'{base}weight_g' in hf_keys:
        return f'{base}weight_g', f'{base}weight_v'
    raise FairseqCheckpointError('the installed transformers builds the positional conv without weight norm; '
                                 'cannot map fairseq weight_g / weight_v')


def fairseq_to_transformers_key_map(config, hf_keys: set[str]) -> dict[str, str]:
    """Explicit ``fairseq key -> transformers key`` map for a HuBERT / wav2vec 2.0 of this config."""
    mapping = {'mask_emb': 'masked_spec_embed'}

    # conv feature extractor: fairseq block = Sequential(conv, dropout, norm?, GELU)
    for i in range(len(config.conv_dim)):
        mapping[f'feature_extractor.conv_layers.{i}.0.weight'] = f'feature_extractor.conv_layers.{i}.conv.weight'
        if config.conv_bias:
            mapping[f'feature_extractor.conv_layers.{i}.0.bias'] = f'feature_extractor.conv_layers.{i}.conv.bias'
        if config.feat_extract_norm == 'group' and i == 0:
            norm = 'feature_extractor.conv_layers.0.2.'           # GroupNorm(dim, dim) on the first conv only
        elif config.feat_extract_norm == 'layer':
            norm = f'feature_extractor.conv_layers.{i}.2.1.'      # Sequential(TransposeLast, LayerNorm, TransposeLast)
        else:
            continue
        for p in ('weight', 'bias'):
            mapping[norm + p] = f'feature_extractor.conv_layers.{i}.layer_norm.{p}'

    for p in ('weight', 'bias'):
        mapping[f'layer_norm.{p}'] = f'feature_projection.layer_norm.{p}'
        mapping[f'post_extract_proj.{p}'] = f'feature_projection.projection.{p}'
        mapping[f'encoder.layer_norm.{p}'] = f'encoder.layer_norm.{p}'

    weight_g, weight_v = _pos_conv_targets(hf_keys)
    mapping['encoder.pos_conv.0.bias'] = 'encoder.pos_conv_embed.conv.bias'
    mapping['encoder.pos_conv.0.weight_g'] = weight_g
    mapping['encoder.pos_conv.0.weight_v'] = weight_v

    layer_parts = {
        'self_attn.k_proj': 'attention.k_proj', 'self_attn.v_proj': 'attention.v_proj',
        'self_attn.q_proj': 'attention.q_proj', 'self_attn.out_proj': 'attention.out_proj',
        'self_attn_layer_norm': 'layer_norm', 'fc1': 'feed_forward.intermediate_dense',
        'fc2': 'feed_forward.output_dense', 'final_layer_norm': 'final_layer_norm',
    }
    for layer in range(config.num_hidden_layers):
        for src, dst in layer_parts.items():
            for p in ('weight', 'bias'):
                mapping[f'encoder.layers.{layer}.{src}.{p}'] = f'encoder.layers.{layer}.{dst}.{p}'
    return mapping


def _strip_finetuning_prefix(state_dict: dict) -> dict:
    prefix = 'w2v_encoder.w2v_model.'
    if not any(k.startswith(prefix) for k in state_dict):
        return state_dict
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}  # drops the CTC head


def convert_state_dict(fairseq_state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Map every fairseq weight onto ``model``'s keys; raise on missing / unexpected keys or shape mismatch."""
    target = model.state_dict()
    mapping = fairseq_to_transformers_key_map(model.config, set(target))
    fairseq_state = _strip_finetuning_prefix(fairseq_state)

    converted, unexpected, mismatched = {}, [], []
    for key, value in fairseq_state.items():
        if key.startswith(_IGNORED_PREFIXES):
            continue
        if key not in mapping:
            unexpected.append(key)
            continue
        dst = mapping[key]
        if dst not in target:
            raise FairseqCheckpointError(f'key map points {key} to {dst}, which the transformers model lacks')
        if tuple(value.shape) != tuple(target[dst].shape):
            mismatched.append(f'{key} {tuple(value.shape)} -> {dst} {tuple(target[dst].shape)}')
            continue
        converted[dst] = value.to(target[dst].dtype)

    source_of = {dst: src for src, dst in mapping.items()}
    left = sorted(set(target) - set(converted))
    missing = [source_of[k] for k in left if k in source_of and source_of[k] not in fairseq_state]
    unmapped = [k for k in left if k not in source_of]
    if unexpected or mismatched or missing or unmapped:
        shorten = lambda keys: f'{sorted(keys)[:8]}{" ..." if len(keys) > 8 else ""}'
        problems = []
        if missing:
            problems.append(f'missing fairseq keys {shorten(missing)}')
        if unexpected:
            problems.append(f'unexpected fairseq keys {shorten(unexpected)}')
        if mismatched:
            problems.append(f'shape mismatches {mismatched[:8]}')
        if unmapped:
            problems.append(f'transformers keys with no fairseq source {shorten(unmapped)}')
        raise FairseqCheckpointError('fairseq weights do not fit the rebuilt model: ' + '; '.join(problems))
    return converted


@dataclass
class FairseqModel:
    """A fairseq checkpoint rebuilt as a ``transformers`` model (eval mode, float32)."""
    model: nn.Module
    kind: str                 # 'hubert' or 'wav2vec2'
    normalize: bool           # fairseq ``task.normalize``: layer-norm the waveform before the model
    sample_rate: int
    model_cfg: dict = field(repr = False, default_factory = dict)


def load_fairseq_model(path: str | os.PathLike) -> FairseqModel:
    """Rebuild a fairseq HuBERT / wav2vec 2.0 checkpoint as ``transformers.HubertModel`` / ``Wav2Vec2Model``
    with every weight mapped explicitly (see ``convert_state_dict``)."""
    pkg = read_fairseq_checkpoint(path)
    model_cfg, task_cfg = fairseq_configs(pkg)
    kind = _model_kind(model_cfg)
    config = transformers_config_from_fairseq(model_cfg)

    from transformers import HubertModel, Wav2Vec2Model
    model = (HubertModel if kind == 'hubert' else Wav2Vec2Model)(config)

    state = pkg['model']
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise FairseqCheckpointError(f'{path}: "model" is not a state dict of tensors')
    try:
        converted = convert_state_dict(state, model)
    except FairseqCheckpointError as error:
        raise FairseqCheckpointError(f'{path}: {error}') from None
    model.load_state_dict(converted, strict = True)
    model.eval()

    return FairseqModel(
        model = model, kind = kind, normalize = bool(task_cfg.get('normalize', False)),
        sample_rate = int(task_cfg.get('sample_rate', 16000)), model_cfg = model_cfg,
    )
