"""Checkpoints written by the established audiolm-pytorch 2.4.0: a key map onto this package's networks, and a
loud refusal where the networks differ.

``model.load(path)`` routes files in 2.4.0's layout here (``load_reference_layout``).
``convert_reference_checkpoint(path_or_state_dict, model, strict=True)`` maps a 2.4.0 ``SemanticTransformer`` /
``CoarseTransformer`` / ``FineTransformer`` state dict (the ``model`` entry of what its trainers save) onto ours.
Every reference key is either mapped (renamed, transposed, or — for the single shared key/value head of the
reference's attention — repeated over our heads, which is exact) or belongs to a part of the reference
network this package does not have. Those parts are (measured on 2.4.0, see docs/model_differences.md):

- hyper-connections: 4 residual streams mixed by learned static and dynamic weights around every sublayer;
- relative position bias MLPs (ours: rotary positions) and the per-quantizer position embeddings of the
  coarse / fine transformers;
- a LayerNorm inside every feed-forward (between GEGLU and the output projection);
- cross-attention null key/value and context norm; separate start tokens of the fine transformer;
- value-residual attention (a computation, not a weight: 2.4.0 always applies it);
- self-attention keys / values computed from the un-normalised residual stream (2.4.0 pre-norms the queries
  only; ours normalises the input of all three).

So a 2.4.0 checkpoint cannot give the reference's outputs here, and ``strict=True`` (the default) raises a
``ReferenceCheckpointError`` naming each missing part and how many parameters it holds. ``strict=False`` loads
the mapped tensors only (a warm start, not the same model) and returns the report. Keys that are neither
mapped nor a known part raise in both modes. SoundStream checkpoints are refused: ``convert_reference_soundstream``
explains the differences (decoder layout, attention block) measured against our network.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

logger = logging.getLogger(__name__)

REFERENCE_VERSION = '2.4.0'

# reference parts without a counterpart here: pattern on the reference key -> what it is
STRUCTURAL = {
    r'transformer\.layers\.\d+\.\d+\.(static_alpha|dynamic_alpha_fn|dynamic_alpha_scale|static_beta|'
    r'dynamic_beta_fn|dynamic_beta_scale|norm\.gamma)$':
        'hyper-connections (4 residual streams with learned mixing around every sublayer; ours: one residual)',
    r'transformer\.rel_pos_bias\.': 'relative position bias MLP (ours: rotary positions)',
    r'^(pos_bias_mlp|null_pos_bias|cross_attn_bias)': 'position bias MLP / biases (ours: rotary positions)',
    r'_quantize_embedding\.weight$': 'per-quantizer position embeddings (ours: rotary positions only)',
    r'transformer\.layers\.\d+\.2\.branch\.3\.(gamma|beta)$':
        'LayerNorm inside the feed-forward (ours: GEGLU straight into the output projection)',
    r'transformer\.layers\.\d+\.1\.branch\.(null_kv|context_norm\.(gamma|beta))$':
        'cross-attention null key/value and context norm',
    r'^(coarse_start_token|fine_start_token)$': 'separate coarse / fine start tokens (ours: one start token)',
}


class ReferenceCheckpointError(ValueError):
    """A reference checkpoint that this package's network cannot represent (or does not recognise)."""


@dataclass
class ConversionReport:
    kind: str
    mapped: dict[str, str] = field(default_factory = dict)           # reference key -> our key
    structural: dict[str, list[str]] = field(default_factory = dict)  # reason -> reference keys
    unused: list[str] = field(default_factory = list)                 # reference keys its own forward never reads
    mapped_params: int = 0
    structural_params: int = 0

    def describe(self) -> str:
        lines = [f'{self.kind}: {len(self.mapped)} tensors ({self.mapped_params:,} parameters) map onto this '
                 f'package\'s network; {self.structural_params:,} parameters belong to parts it does not have:']
        for reason, keys in self.structural.items():
            lines.append(f'  - {reason}: {len(keys)} tensors, e.g. {keys[0]}')
        lines.append('  - value-residual attention (a computation 2.4.0 always applies; no weights)')
        lines.append('  - self-attention keys / values computed from the un-normalised input (2.4.0 pre-norms the '
                     'queries only; ours normalises all three)')
        return '\n'.join(lines)


def _layer_rules(heads: int):
    """(reference suffix regex, our suffix template, transform) for the decoder stack."""
    def kv(weight: Tensor) -> Tensor:        # one shared key/value head -> the same head for each of ours
        k, v = weight.chunk(2, dim = 0)
        return torch.cat((repeat(k, 'd c -> (h d) c', h = heads), repeat(v, 'd c -> (h d) c', h = heads)))

    same = lambda t: t
    return [
        (r'(\d+)\.0\.branch\.norm\.gamma', r'\1.attn_norm.weight', same),
        (r'(\d+)\.0\.branch\.norm\.beta', r'\1.attn_norm.bias', same),
        (r'(\d+)\.0\.branch\.to_q\.weight', r'\1.attn.to_q.weight', same),
        (r'(\d+)\.0\.branch\.to_kv\.weight', r'\1.attn.to_kv.weight', kv),
        (r'(\d+)\.0\.branch\.to_out\.0\.weight', r'\1.attn.to_out.weight', same),
        (r'(\d+)\.1\.branch\.norm\.gamma', r'\1.cross_norm.weight', same),
        (r'(\d+)\.1\.branch\.norm\.beta', r'\1.cross_norm.bias', same),
        (r'(\d+)\.1\.branch\.to_q\.weight', r'\1.cross_attn.to_q.weight', same),
        (r'(\d+)\.1\.branch\.to_kv\.weight', r'\1.cross_attn.to_kv.weight', kv),
        (r'(\d+)\.1\.branch\.to_out\.0\.weight', r'\1.cross_attn.to_out.weight', same),
        (r'(\d+)\.2\.branch\.0\.gamma', r'\1.ff.net.0.weight', same),
        (r'(\d+)\.2\.branch\.0\.beta', r'\1.ff.net.0.bias', same),
        (r'(\d+)\.2\.branch\.1\.weight', r'\1.ff.net.1.weight', same),
        (r'(\d+)\.2\.branch\.5\.weight', r'\1.ff.net.4.weight', same),
    ]


def _top_rules(kind: str):
    """(reference key, our key, transform) for the embeddings and heads of each stage."""
    same = lambda t: t
    heads = lambda t: rearrange(t, 'q c d -> q d c')            # einsum('q c d, b n q d') -> ours (q, d, c)
    common = [('transformer.norm.gamma', 'decoder.transformer.norm.weight', same),
              ('transformer.norm.beta', 'decoder.transformer.norm.bias', same)]
    if kind == 'SemanticTransformer':
        return common + [('start_token', 'start_token', same), ('semantic_embedding.weight', 'semantic_embedding.weight', same),
                         ('to_logits.weight', 'to_logits.weight', same), ('to_logits.bias', 'to_logits.bias', same)]
    if kind == 'CoarseTransformer':
        return common + [('semantic_start_token', 'semantic_start', same), ('coarse_start_token', 'coarse_start', same),
                         ('semantic_embedding.weight', 'semantic_embedding.weight', same),
                         ('coarse_embedding.weight', 'coarse_embedding.weight', same),
                         ('coarse_logit_weights', 'coarse_head_weight', heads),
                         ('to_semantic_logits.weight', 'semantic_head.weight', same),
                         ('to_semantic_logits.bias', 'semantic_head.bias', same)]
    if kind == 'FineTransformer':
        return common + [('coarse_logit_weights', 'coarse_head_weight', heads),
                         ('fine_logit_weights', 'fine_head_weight', heads)]
    raise ReferenceCheckpointError(f'no key map for {kind}: reference checkpoints convert onto SemanticTransformer, '
                                   'CoarseTransformer or FineTransformer (SoundStream: see convert_reference_soundstream)')


def read_reference_state_dict(path_or_state: str | Path | dict) -> dict[str, Tensor]:
    """The ``model`` state dict of a reference checkpoint file (or a state dict / package already loaded)."""
    if isinstance(path_or_state, (str, Path)):
        path = Path(path_or_state)
        if not path.is_file():
            raise FileNotFoundError(f'reference checkpoint not found: {path}')
        pkg = torch.load(path, map_location = 'cpu', weights_only = True)
    else:
        pkg = path_or_state
    state = pkg.get('model', pkg) if isinstance(pkg, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ReferenceCheckpointError('expected a state dict, or a package with its state dict under "model" (what '
                                       'audiolm-pytorch 2.4.0 trainers save)')
    return state


def convert_reference_state_dict(state: dict[str, Tensor], model: nn.Module) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map a reference state dict onto ``model`` -> (our partial state dict, report). Unknown keys raise."""
    kind = type(model).__name__
    for base in type(model).__mro__:
        if base.__name__ in ('SemanticTransformer', 'CoarseTransformer', 'FineTransformer'):
            kind = base.__name__
            break
    report = ConversionReport(kind = kind)
    ours = model.state_dict()
    # our heads per shared reference key/value head: both store 2 * (heads *) dim_head rows
    our_kv = next((v for k, v in ours.items() if k.endswith('layers.0.attn.to_kv.weight')), None)
    ref_kv = state.get('transformer.layers.0.0.branch.to_kv.weight')
    heads = our_kv.shape[0] // ref_kv.shape[0] if our_kv is not None and ref_kv is not None else 1
    top = {ref: (our, fn) for ref, our, fn in _top_rules(kind)}
    layer_rules = _layer_rules(heads)
    converted, unknown, shape_errors = {}, [], []

    def place(ref_key, our_key, tensor):
        if our_key not in ours:
            return False
        if tuple(ours[our_key].shape) != tuple(tensor.shape):
            shape_errors.append(f'{ref_key} -> {our_key}: {tuple(tensor.shape)} vs ours {tuple(ours[our_key].shape)}')
        converted[our_key] = tensor
        report.mapped[ref_key] = our_key
        report.mapped_params += tensor.numel()
        return True

    for key, tensor in state.items():
        if key in top:
            our_key, fn = top[key]
            if place(key, our_key, fn(tensor)):
                continue
        layer = re.match(r'transformer\.layers\.(.+)$', key)
        if layer and any(re.fullmatch(pattern, layer.group(1)) for pattern, _, _ in layer_rules):
            pattern, template, fn = next(r for r in layer_rules if re.fullmatch(r[0], layer.group(1)))
            our_key = 'decoder.transformer.layers.' + re.sub(pattern, template, layer.group(1))
            # hyper-connections wrap each sublayer as '.branch'; a reference built with num_residual_streams=1
            # has the same names (a plain Residual around '.branch')
            if place(key, our_key, fn(tensor)):
                continue
        reason = next((why for pattern, why in STRUCTURAL.items() if re.search(pattern, key)), None)
        if reason is None and key == 'proj_text_embed.weight' and not getattr(model, 'audio_text_condition', False) \
                and not any(k.startswith('decoder.proj') or 'cond' in k for k in ours):
            report.unused.append(key)      # 2.4.0 builds the T5 projection even without conditioning
            continue
        if reason is None and kind == 'FineTransformer' and key in ('coarse_embedding.weight', 'fine_embedding.weight'):
            continue                       # placed together below
        if reason is None:
            unknown.append(key)
            continue
        report.structural.setdefault(reason, []).append(key)
        report.structural_params += tensor.numel()

    if kind == 'FineTransformer' and 'coarse_embedding.weight' in state:
        # reference: coarse ids offset by quantizer * codebook_size in one table, fine ids in another; ours: one
        # table with the fine ranges after the coarse ones, the same offsets
        place('coarse_embedding.weight', 'embedding.weight',
              torch.cat((state['coarse_embedding.weight'], state['fine_embedding.weight'])))
        report.mapped['fine_embedding.weight'] = 'embedding.weight'

    if unknown:
        raise ReferenceCheckpointError(
            f'{len(unknown)} keys of this checkpoint are not in the audiolm-pytorch {REFERENCE_VERSION} {kind} key map '
            f'(another version, another class, or a model built with options this converter does not know): '
            + ', '.join(unknown[:12]) + (' ...' if len(unknown) > 12 else ''))
    if shape_errors:
        raise ReferenceCheckpointError(
            f'the {kind} given is not built like the checkpoint (pass the same constructor arguments): '
            + '; '.join(shape_errors[:6]))
    return converted, report


def convert_reference_checkpoint(path_or_state: str | Path | dict, model: nn.Module, *,
                                 strict: bool = True) -> ConversionReport:
    """Load an audiolm-pytorch 2.4.0 transformer checkpoint into ``model`` (ours, built with the same
    constructor arguments).

    ``strict=True``: raise ``ReferenceCheckpointError`` (naming each part this package's network lacks) unless
    the conversion is exact. ``strict=False``: load the mapped tensors only, leave the rest of ``model`` as it
    is, log a warning, and return the report (the outputs then differ from the reference's).
    """
    state = read_reference_state_dict(path_or_state)
    converted, report = convert_reference_state_dict(state, model)
    if report.structural_params or strict:
        message = (report.describe() + '\nThese parts change the outputs, so the converted model would not match '
                   f'audiolm-pytorch {REFERENCE_VERSION}.')
        if strict:
            raise ReferenceCheckpointError(message + ' Pass strict=False to load the mapped tensors as a warm start '
                                           '(then fine-tune), or keep using audiolm-pytorch 2.4.0 for this checkpoint.')
        logger.warning(message + ' Loaded the mapped tensors only (strict=False).')
    model.load_state_dict(converted, strict = False)
    return report


def convert_reference_soundstream(path_or_state: str | Path | dict, model: nn.Module):
    """SoundStream checkpoints from 2.4.0 do not convert: raise ``ReferenceCheckpointError`` with what differs
    between the checkpoint and ``model`` (ours, built with the same constructor arguments)."""
    state = read_reference_state_dict(path_or_state)
    ours = {k: v for k, v in model.state_dict().items()
            if not k.startswith(('discriminators', 'stft_discriminator', 'multi_period', 'mel_loss', 'multi_spectral'))}
    ref = {k: v for k, v in state.items() if not k.startswith(('discriminators', 'stft_discriminator', 'mel_spec'))}
    missing = [k for k in ours if k not in ref]
    unexpected = [k for k in ref if k not in ours]
    mismatched = [k for k in ref if k in ours and tuple(ref[k].shape) != tuple(ours[k].shape)]
    parts = sorted({k.split('.')[0] for k in missing + unexpected + mismatched})
    raise ReferenceCheckpointError(
        f'SoundStream checkpoints from audiolm-pytorch {REFERENCE_VERSION} cannot be converted: the same constructor '
        f'call builds a different network here ({len(missing)} of our generator tensors have no counterpart, '
        f'{len(unexpected)} of the checkpoint\'s are not ours, {len(mismatched)} differ in shape; parts: '
        f'{", ".join(parts)}): the decoder\'s block layout and channel progression and the local-attention block '
        '(fused qkv with q/k scales and value gates there) differ, see docs/model_differences.md. Retrain the '
        'codec here, or keep 2.4.0 for it.')


def _base_name(model: nn.Module, names: tuple[str, ...]) -> str | None:
    return next((base.__name__ for base in type(model).__mro__ if base.__name__ in names), None)


def load_reference_layout(model: nn.Module, state: dict[str, Tensor], *, strict: bool = True) -> bool:
    """Called by ``.load(path)`` for files not written by this package: when ``state`` is in audiolm-pytorch
    2.4.0's layout for ``model``'s class, convert it (``convert_reference_checkpoint``; raises unless exact when
    ``strict``) and return True; otherwise return False (the file is loaded as an ordinary state dict)."""
    if _base_name(model, ('SemanticTransformer', 'CoarseTransformer', 'FineTransformer')):
        if any(re.match(r'transformer\.layers\.\d+\.\d+\.', key) for key in state):
            convert_reference_checkpoint(state, model, strict = strict)
            return True
        return False
    if _base_name(model, ('SoundStream',)) and strict:
        ours = model.state_dict()
        differs = any(key not in ours or tuple(ours[key].shape) != tuple(value.shape) for key, value in state.items()
                      if not key.startswith(('discriminators', 'stft_discriminator')))
        if differs and 'encoder.0.conv.weight' in state:    # a SoundStream file, not ours
            convert_reference_soundstream(state, model)     # raises, saying what differs
    return False
