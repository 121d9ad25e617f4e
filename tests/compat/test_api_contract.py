"""The public API contract: the names and keyword arguments of the established ``lucidrains/audiolm-pytorch``
API (version 2.4), which scripts written for it rely on.

The expectations are explicit data transcribed from that API (not read from it at test time): a change to a public
signature that breaks the contract fails here with the name, the keyword and what was found. One test per public
name (class or function) checks all of its members' keywords, positional arguments, classmethods and properties
and reports every broken one at once, so the number of tests is the number of public names in the contract, not of
keywords.

Checks are by ``inspect.signature`` (import only); the only models built are a tiny ``SoundStream`` and a tiny
random ``EncodecWrapper``, whose codec attributes are instance attributes.
Checked against: ``SemanticTransformer(cond_drop_prob=)`` default 0.5 -> 0.4 fails
``test_public_name_keeps_the_established_signatures[SemanticTransformer]``, naming the keyword.
"""

import importlib
import inspect
import math

import pytest

import audiolm_pytorch

REQ = object()  # named in the established API without a default: the keyword must be accepted, any default (or none)

# ---------------------------------------------------------------------------------------------------------------
# the contract: (public name, member, {keyword: the established default or REQ})
# member '__init__' = the constructor of a class, or the function itself

_TRANSFORMER_COMMON = dict(
    dim = REQ, depth = REQ, heads = 8, attn_dropout = 0., ff_dropout = 0., t5_name = REQ, cond_dim = None,
    has_condition = False, audio_text_condition = False, cond_as_self_attn_prefix = False, cond_drop_prob = 0.5,
    flash_attn = REQ,
)

_LM_TRAINER_KWARGS = dict(
    num_train_steps = REQ, batch_size = REQ, data_max_length = None, folder = None, dataset = None,
    audio_conditioner = None, lr = 3e-4, grad_accum_every = 1, wd = 0., max_grad_norm = 0.5, valid_frac = 0.05,
    save_results_every = 100, save_model_every = 1000, results_folder = './results', accelerate_kwargs = {},
)

CONTRACT = [
    # ---- codecs
    ('SoundStream', '__init__', dict(
        channels = 32, strides = (2, 4, 5, 8), channel_mults = (2, 4, 8, 16), codebook_dim = 512,
        codebook_size = REQ, rq_num_quantizers = 8, rq_groups = 1, rq_commitment_weight = 1., rq_ema_decay = 0.95,
        rq_quantize_dropout_multiple_of = 1, quantize_dropout_cutoff_index = 1, rq_kwargs = {},
        use_lookup_free_quantizer = False, use_finite_scalar_quantizer = False,
        finite_scalar_quantizer_levels = None, input_channels = 1, discr_multi_scales = (1, 0.5, 0.25),
        enc_cycle_dilations = (1, 3, 9), dec_cycle_dilations = (1, 3, 9),
        multi_spectral_window_powers_of_two = range(6, 12), multi_spectral_n_mels = 64, recon_loss_weight = 1.,
        multi_spectral_recon_loss_weight = REQ, adversarial_loss_weight = 1., feature_loss_weight = 100,
        target_sample_hz = 16000, use_local_attn = True, attn_window_size = 128, attn_depth = 1, attn_heads = 8,
        attn_dim_head = 64, squeeze_excite = False, stft_discriminator = None)),
    ('SoundStream', 'forward', dict(
        x = REQ, target = None, return_encoded = False, return_codes_only = False, return_discr_loss = False,
        return_discr_losses_separately = False, return_loss_breakdown = False, return_recons_only = False,
        input_sample_hz = None, apply_grad_penalty = False)),
    ('SoundStream', 'tokenize', dict(audio = REQ)),
    ('SoundStream', 'decode_from_codebook_indices', dict(codes = REQ)),
    ('SoundStream', 'decode', dict(latents = REQ, quantize = False)),
    ('SoundStream', 'save', dict(path = REQ)),
    ('SoundStream', 'load', dict(path = REQ, strict = True)),
    ('SoundStream', 'init_and_load_from', dict(path = REQ)),
    ('SoundStream', 'non_discr_parameters', dict()),
    ('AudioLMSoundStream', '__init__', dict(strides = (2, 4, 5, 8), target_sample_hz = 16000, rq_num_quantizers = 12)),
    ('MusicLMSoundStream', '__init__', dict(strides = (3, 4, 5, 8), target_sample_hz = 24000, rq_num_quantizers = 12)),
    ('EncodecWrapper', '__init__', dict(target_sample_hz = 24000, strides = (2, 4, 5, 8), num_quantizers = 8,
                                        bandwidth = 6.)),
    ('EncodecWrapper', 'tokenize', dict()),
    ('EncodecWrapper', 'decode_from_codebook_indices', dict()),

    # ---- semantic tokenizers
    ('HubertWithKmeans', '__init__', dict(checkpoint_path = REQ, kmeans_path = REQ, target_sample_hz = 16000,
                                          seq_len_multiple_of = None, output_layer = 9)),
    ('HubertWithKmeans', 'forward', dict(wav_input = REQ, flatten = True, input_sample_hz = None)),
    ('FairseqVQWav2Vec', '__init__', dict(checkpoint_path = REQ, target_sample_hz = 24000, seq_len_multiple_of = None)),
    ('FairseqVQWav2Vec', 'forward', dict(wav_input = REQ, flatten = True, input_sample_hz = None)),

    # ---- transformers
    ('SemanticTransformer', '__init__', dict(num_semantic_tokens = REQ, **_TRANSFORMER_COMMON)),
    ('CoarseTransformer', '__init__', dict(num_semantic_tokens = REQ, codebook_size = REQ,
                                           num_coarse_quantizers = REQ, **_TRANSFORMER_COMMON)),
    ('FineTransformer', '__init__', dict(num_coarse_quantizers = REQ, num_fine_quantizers = REQ, codebook_size = REQ,
                                         **_TRANSFORMER_COMMON)),
    *[(name, member, kwargs)
      for name in ('SemanticTransformer', 'CoarseTransformer', 'FineTransformer')
      for member, kwargs in (('forward_with_cond_scale', dict(cond_scale = 3.)), ('embed_text', dict(texts = REQ)),
                             ('save', dict(path = REQ)), ('load', dict(path = REQ)),
                             ('init_and_load_from', dict(path = REQ)))],

    # ---- wrappers
    ('SemanticTransformerWrapper', '__init__', dict(transformer = REQ, wav2vec = None, audio_conditioner = None,
                                                    pad_id = -1, unique_consecutive = True, mask_prob = 0.15)),
    ('SemanticTransformerWrapper', 'forward', dict(semantic_token_ids = None, raw_wave = None, text = None,
                                                   text_embeds = None, return_loss = False)),
    ('SemanticTransformerWrapper', 'generate', dict(
        max_length = REQ, text = None, text_embeds = None, prime_wave = None, prime_wave_input_sample_hz = None,
        prime_ids = None, batch_size = 1, cond_scale = 3, filter_thres = 0.9, temperature = 1., use_kv_cache = True)),
    ('CoarseTransformerWrapper', '__init__', dict(
        transformer = REQ, codec = None, wav2vec = None, audio_conditioner = None, pad_id = -1,
        unique_consecutive = True, semantic_cross_entropy_loss_weight = 1., mask_prob = 0.15)),
    ('CoarseTransformerWrapper', 'forward', dict(
        semantic_token_ids = None, raw_wave = None, raw_wave_for_codec = None, text = None, text_embeds = None,
        coarse_token_ids = None, return_loss = False)),
    ('CoarseTransformerWrapper', 'generate', dict(
        semantic_token_ids = REQ, prime_wave = None, prime_coarse_token_ids = None, text = None, text_embeds = None,
        max_time_steps = 512, cond_scale = 3., filter_thres = 0.9, temperature = 1., reconstruct_wave = False,
        use_kv_cache = True)),
    ('FineTransformerWrapper', '__init__', dict(
        transformer = REQ, codec = None, soundstream = None, audio_conditioner = None,
        coarse_cross_entropy_loss_weight = 1., pad_id = -1, mask_prob = 0.15)),
    ('FineTransformerWrapper', 'forward', dict(
        raw_wave = None, token_ids = None, coarse_token_ids = None, fine_token_ids = None, text = None,
        text_embeds = None, return_loss = False)),
    ('FineTransformerWrapper', 'generate', dict(
        coarse_token_ids = REQ, prime_wave = None, prime_fine_token_ids = None, text = None, text_embeds = None,
        cond_scale = 3., filter_thres = 0.9, temperature = 1., reconstruct_wave = False, use_kv_cache = True,
        mask_out_generated_fine_tokens = False)),
    ('AudioLM', '__init__', dict(wav2vec = REQ, codec = REQ, semantic_transformer = REQ, coarse_transformer = REQ,
                                 fine_transformer = REQ, audio_conditioner = None, unique_consecutive = True)),
    ('AudioLM', 'forward', dict(
        batch_size = 1, text = None, text_embeds = None, prime_wave = None, prime_wave_input_sample_hz = None,
        prime_wave_path = None, max_length = 2048, return_coarse_generated_wave = False,
        mask_out_generated_fine_tokens = False)),

    # ---- trainers
    ('SoundStreamTrainer', '__init__', dict(
        soundstream = REQ, num_train_steps = REQ, batch_size = REQ, data_max_length = None,
        data_max_length_seconds = None, folder = None, dataset = None, train_dataloader = None,
        val_dataloader = None, lr = 2e-4, grad_accum_every = 4, wd = 0., max_grad_norm = 0.5,
        discr_max_grad_norm = None, save_results_every = 100, save_model_every = 1000, log_losses_every = 1,
        results_folder = './results', valid_frac = 0.05, random_split_seed = 42, use_ema = True, ema_beta = 0.995,
        ema_update_after_step = 500, ema_update_every = 10, apply_grad_penalty_every = 4, dl_num_workers = 0,
        accelerator = None, accelerate_kwargs = {}, use_wandb_tracking = False, force_clear_prev_results = None)),
    ('SemanticTransformerTrainer', '__init__', dict(transformer = REQ, wav2vec = REQ, **_LM_TRAINER_KWARGS)),
    ('CoarseTransformerTrainer', '__init__', dict(transformer = REQ, codec = REQ, wav2vec = REQ,
                                                  **_LM_TRAINER_KWARGS)),
    ('FineTransformerTrainer', '__init__', dict(transformer = REQ, codec = REQ, **_LM_TRAINER_KWARGS)),
    *[(name, member, kwargs)
      for name in ('SoundStreamTrainer', 'SemanticTransformerTrainer', 'CoarseTransformerTrainer',
                   'FineTransformerTrainer')
      for member, kwargs in (('train', dict()), ('train_step', dict()), ('save', dict(path = REQ)),
                             ('load', dict(path = REQ)), ('wandb_tracker', dict(project = REQ, run = REQ)))],
    *[(name, 'generate', dict()) for name in ('SemanticTransformerTrainer', 'CoarseTransformerTrainer',
                                              'FineTransformerTrainer')],

    # ---- data
    ('SoundDataset', '__init__', dict(folder = REQ, target_sample_hz = REQ, exts = ['flac', 'wav', 'mp3', 'ogg'],
                                      max_length = None, seq_len_multiple_of = None)),
    ('get_dataloader', '__init__', dict(ds = REQ, pad_to_longest = True)),

    # ---- SoundStorm
    ('ConformerWrapper', '__init__', dict(codebook_size = REQ, num_quantizers = REQ, conformer = REQ,
                                          grouped_quantizers = 1)),
    ('Conformer', '__init__', dict(
        dim = REQ, depth = REQ, dim_head = 64, heads = 8, ff_mult = 4, conv_expansion_factor = 2,
        conv_kernel_size = 31, attn_dropout = 0., ff_dropout = 0., conv_dropout = 0., conv_causal = False)),
    ('SoundStorm', '__init__', dict(net = REQ, soundstream = None, wav2vec = None, steps = 18, schedule = 'cosine')),
    ('SoundStorm', 'forward', dict(cond_semantic_token_ids = None, mask = None)),
    ('SoundStorm', 'generate', dict(num_latents = None, seconds = None, batch_size = 1, cond_semantic_token_ids = None,
                                    prompt_acoustic_token_ids = None, mask = None)),

    # ---- MuLaN / MusicLM
    ('AudioSpectrogramTransformer', '__init__', dict(
        dim = REQ, depth = REQ, heads = 8, dim_head = 64, patch_size = 16, spec_n_fft = 128, spec_win_length = 24,
        spec_aug_stretch_factor = 0.8)),
    ('TextTransformer', '__init__', dict(dim = REQ, depth = REQ, heads = 8, dim_head = 64, num_tokens = REQ,
                                         max_seq_len = 256)),
    ('MuLaN', '__init__', dict(audio_transformer = REQ, text_transformer = REQ, dim_latent = 128,
                               decoupled_contrastive_learning = True)),
    ('MuLaN', 'forward', dict(wavs = REQ, texts = None, raw_texts = None)),
    ('MuLaN', 'get_audio_latents', dict(wavs = REQ)),
    ('MuLaN', 'get_text_latents', dict(texts = None, raw_texts = None)),
    ('MuLaNEmbedQuantizer', '__init__', dict(mulan = REQ, conditioning_dims = REQ, rq_num_quantizers = 8,
                                             codebook_size = 1024, namespaces = ('semantic', 'coarse', 'fine'))),
    ('MuLaNEmbedQuantizer', 'forward', dict(wavs = None, texts = None, namespace = REQ)),
    ('MusicLM', '__init__', dict(audio_lm = REQ, mulan_embed_quantizer = REQ)),
    ('MusicLM', 'forward', dict(texts = REQ, num_samples = 1)),
    ('MuLaNTrainer', '__init__', dict(mulan = REQ, dataset = REQ, num_train_steps = REQ, batch_size = REQ)),
]

# Defaults that differ from the established API on purpose, each documented in the library:
# (name, member, keyword) -> (the library's default, why)
DOCUMENTED_DEVIATIONS = {
    ('SemanticTransformerWrapper', 'generate', 'batch_size'): (
        None, 'None = inferred from texts / text_embeds / primes, else 1 (docstring of generate)'),
    ('AudioLM', 'forward', 'batch_size'): (
        None, 'None = one sample per text / text_embeds row / prime wave, else 1 (docstring of forward)'),
    ('SoundStorm', 'generate', 'batch_size'): (
        None, 'None = the batch of the condition / prompt / mask, else 1 (docstring of generate)'),
    ('SoundStorm', '__init__', 'schedule'): (
        'linear', "the soundstorm-pytorch 0.6.1 default restored (issue 15); seed 001 passes schedule='cosine' "
                  'explicitly (MIGRATION.md)'),
    ('EncodecWrapper', '__init__', 'target_sample_hz'): (
        None, "taken from the model's config; a value that disagrees raises ValueError (class docstring)"),
    ('EncodecWrapper', '__init__', 'strides'): (
        None, "taken from the model's config; a value that disagrees raises ValueError (class docstring)"),
    ('EncodecWrapper', '__init__', 'num_quantizers'): (
        None, 'taken from bandwidth (6 kbps -> 8 on the 24 kHz model); a mismatch raises ValueError'),
    # the codec training recipe of issue 13 (benchmarks/RESULTS.md, "Codec recipe ablations"; README "SoundStream")
    ('SoundStream', '__init__', 'recon_loss_weight'): (
        10., 'waveform term weighed against the O(1) log-mel L1 term (multi_spectral_loss_kind="log_l1")'),
    ('SoundStream', '__init__', 'feature_loss_weight'): (
        2., 'feature matching no longer dominates the normalised mel term (held-out log-mel 0.758 vs 0.91 at 100)'),
    ('SoundStream', '__init__', 'use_local_attn'): (
        False, 'the bottleneck transformers made the encoder send one vector per frame (held-out SI-SDR -49 dB vs '
               '-4 dB without them at 1000 steps); legacy_defaults rebuilds old checkpoints with them'),
    ('SoundStreamTrainer', '__init__', 'apply_grad_penalty_every'): (
        0, 'no gradient penalty by default, as SoundStream / EnCodec / DAC train'),
    # mutable defaults avoided: None means an empty dict
    ('SoundStream', '__init__', 'rq_kwargs'): (None, 'None = {} (no mutable default)'),
    ('SoundStreamTrainer', '__init__', 'accelerate_kwargs'): (None, 'None = {} (no mutable default)'),
    **{(name, '__init__', 'accelerate_kwargs'): (None, 'None = {} (no mutable default)')
       for name in ('SemanticTransformerTrainer', 'CoarseTransformerTrainer', 'FineTransformerTrainer')},
}

# leading arguments that the established API takes positionally: (name, member) -> their names in order (None: any name)
POSITIONAL = {
    ('SoundStream', 'forward'): ('x',),
    ('SoundStream', 'tokenize'): ('audio',),
    ('SoundStream', 'decode_from_codebook_indices'): ('codes',),
    ('SoundStream', 'decode'): ('latents', 'quantize'),
    ('SoundStream', 'save'): ('path',),
    ('SoundStream', 'load'): ('path', 'strict'),
    ('SoundStream', 'init_and_load_from'): ('path',),
    ('EncodecWrapper', '__init__'): ('target_sample_hz', 'strides', 'num_quantizers', 'bandwidth'),
    ('HubertWithKmeans', '__init__'): ('checkpoint_path', 'kmeans_path', 'target_sample_hz', 'seq_len_multiple_of',
                                       'output_layer'),
    ('HubertWithKmeans', 'forward'): ('wav_input', 'flatten', 'input_sample_hz'),
    ('FairseqVQWav2Vec', '__init__'): ('checkpoint_path', 'target_sample_hz', 'seq_len_multiple_of'),
    ('FairseqVQWav2Vec', 'forward'): ('wav_input', 'flatten', 'input_sample_hz'),
    ('SoundStreamTrainer', '__init__'): ('soundstream',),
    ('SemanticTransformerTrainer', '__init__'): ('transformer', 'wav2vec'),
    ('CoarseTransformerTrainer', '__init__'): ('transformer', 'codec', 'wav2vec'),
    ('FineTransformerTrainer', '__init__'): ('transformer', 'codec'),
    ('SoundDataset', '__init__'): ('folder', 'target_sample_hz', 'exts', 'max_length', 'seq_len_multiple_of'),
    ('get_dataloader', '__init__'): ('ds', 'pad_to_longest'),
    ('SoundStorm', '__init__'): ('net',),
    ('SoundStorm', 'forward'): (None,),                 # codes (b, n, q) or audio (b, n)
    ('SoundStorm', 'generate'): ('num_latents',),
    ('MuLaN', '__init__'): ('audio_transformer', 'text_transformer'),
    ('MuLaN', 'forward'): ('wavs', 'texts', 'raw_texts'),
    ('MuLaN', 'get_audio_latents'): ('wavs',),
    ('MuLaNEmbedQuantizer', '__init__'): ('mulan', 'conditioning_dims'),
    ('MusicLM', '__init__'): ('audio_lm', 'mulan_embed_quantizer'),
    ('MusicLM', 'forward'): ('texts', 'num_samples'),
    ('MuLaNTrainer', '__init__'): ('mulan', 'dataset'),
}

# properties on the class (semantic tokenizers: the interface is read before any weights are touched)
CLASS_PROPERTIES = {
    'HubertWithKmeans': ('codebook_size', 'downsample_factor', 'target_sample_hz', 'seq_len_multiple_of'),
    'FairseqVQWav2Vec': ('codebook_size', 'downsample_factor', 'target_sample_hz', 'seq_len_multiple_of'),
}

CODEC_ATTRIBUTES = ('target_sample_hz', 'downsample_factor', 'seq_len_multiple_of', 'num_quantizers',
                    'codebook_size', 'rq_groups')

CLASSMETHODS = [(name, 'init_and_load_from') for name in (
    'SoundStream', 'SemanticTransformer', 'CoarseTransformer', 'FineTransformer')]

# every public name of the contract
API_NAMES = sorted({name for name, _, _ in CONTRACT} | set(CLASS_PROPERTIES))


# ---------------------------------------------------------------------------------------------------------------

def _callable(name, member):
    obj = getattr(audiolm_pytorch, name)
    if member == '__init__':
        return obj
    assert hasattr(obj, member), f'{name}.{member} is missing (established API)'
    return getattr(obj, member)


def _signature(name, member):
    fn = _callable(name, member)
    params = dict(inspect.signature(fn).parameters)
    params.pop('self', None)
    params.pop('cls', None)
    return params


def _same_default(expected, actual) -> bool:
    if isinstance(expected, (tuple, list, range)) and isinstance(actual, (tuple, list, range)):
        return tuple(expected) == tuple(actual)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, (int, float)) and not isinstance(actual, bool) and math.isclose(expected, actual)
    return type(expected) is type(actual) and expected == actual


def test_every_contract_name_imports_from_the_top_level():
    missing = []
    for name in API_NAMES:
        namespace = {}
        try:
            exec(f'from audiolm_pytorch import {name}', namespace)
        except ImportError as error:
            missing.append(f'{name}: {error}')
            continue
        if not callable(namespace[name]):
            missing.append(f'{name} is not callable')
    assert not missing, missing


def test_compat_module_reexports_every_public_name():
    compat = importlib.import_module('audiolm_pytorch.audiolm_pytorch')
    namespace = {}
    exec('from audiolm_pytorch.audiolm_pytorch import SoundStream, AudioLM, FineTransformer, FineTransformerWrapper',
         namespace)
    assert namespace['SoundStream'] is audiolm_pytorch.SoundStream
    for name in API_NAMES:
        assert getattr(compat, name) is getattr(audiolm_pytorch, name), name


def _keyword_problem(name, member, params, kw, default):
    """None when ``kw`` is accepted by keyword with the contract's default, else what is wrong."""
    if kw not in params:
        return f'does not accept {kw!r}; signature: {list(params)}'
    param = params[kw]
    if param.kind not in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
        return f'{kw!r} cannot be passed by keyword ({param.kind.description})'
    if default is REQ:
        return None
    actual = param.default
    if actual is param.empty:
        return f'{kw!r} must default to {default!r} but is required'
    deviation = DOCUMENTED_DEVIATIONS.get((name, member, kw))
    if deviation is not None:
        documented, why = deviation
        if not _same_default(documented, actual):
            return (f'{kw}=...: the established API says {default!r}; the documented deviation ({why}) is '
                    f'{documented!r}, found {actual!r}')
        return None
    if not _same_default(default, actual):
        return f'{kw}={actual!r}, the established API says {kw}={default!r}'
    return None


def _contract_by_member():
    merged = {}
    for name, member, kwargs in CONTRACT:
        merged.setdefault((name, member), {}).update(kwargs)
    return merged


def _positional_problems(name, member):
    """What is wrong with the leading positional arguments of ``name.member`` (empty when nothing)."""
    params = [p for p in _signature(name, member).values() if p.kind is not p.VAR_POSITIONAL]
    expected = POSITIONAL[name, member]
    head = params[:len(expected)]
    if len(head) != len(expected):
        return [f'{member}: too few parameters {[p.name for p in params]}']
    problems = []
    for want, param in zip(expected, head):
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            problems.append(f'{member}: {param.name!r} must be positional (established API), is '
                            f'{param.kind.description}')
        elif want is not None and param.name != want:
            problems.append(f'{member}: expected {want!r} in that position, found {param.name!r}')
    return problems


def _member_problems(name, member, expected):
    obj = getattr(audiolm_pytorch, name)
    if member != '__init__' and not hasattr(obj, member):
        return [f'{member} is missing (established API)']
    if not callable(_callable(name, member)):
        return [f'{member} is not callable']
    params = _signature(name, member)
    problems = [f'{member}: {problem}' for kw, default in expected.items()
                if (problem := _keyword_problem(name, member, params, kw, default)) is not None]
    if (name, member) in POSITIONAL:
        problems += _positional_problems(name, member)
    if (name, member) in CLASSMETHODS and not isinstance(inspect.getattr_static(obj, member), classmethod):
        problems.append(f'{member} must be a classmethod')
    return problems


@pytest.mark.parametrize('name', API_NAMES)
def test_public_name_keeps_the_established_signatures(name):
    """One test per public class / function of the contract: every member's keywords with their defaults, the
    leading positional arguments, classmethods and class properties. The failure lists every broken one."""
    problems = []
    for (contract_name, member), expected in sorted(_contract_by_member().items()):
        if contract_name == name:
            problems += _member_problems(name, member, expected)
    cls = getattr(audiolm_pytorch, name)
    problems += [f'{prop} is not a property' for prop in CLASS_PROPERTIES.get(name, ())
                 if not isinstance(inspect.getattr_static(cls, prop, None), property)]
    assert not problems, f'{name}: {len(problems)} problem(s):\n' + '\n'.join(problems)


def test_documented_deviations_are_contract_keywords():
    """A stale entry in DOCUMENTED_DEVIATIONS would silently hide nothing: keep the table honest."""
    contract = {(n, m, k) for n, m, kwargs in CONTRACT for k in kwargs}
    assert set(DOCUMENTED_DEVIATIONS) <= contract


def test_positional_and_classmethod_tables_name_contract_members():
    members = set(_contract_by_member())
    assert set(POSITIONAL) <= members and set(CLASSMETHODS) <= members


def test_soundstream_codec_attributes():
    from audiolm_pytorch import SoundStream
    codec = SoundStream(codebook_size = 16, channels = 4, codebook_dim = 8, rq_num_quantizers = 2, rq_groups = 2,
                        attn_depth = 0, stft_discriminator = False, discr_multi_scales = (1,))
    got = {attr: getattr(codec, attr) for attr in CODEC_ATTRIBUTES}
    assert got == dict(target_sample_hz = 16000, downsample_factor = 320, seq_len_multiple_of = 320,
                       num_quantizers = 2, codebook_size = 16, rq_groups = 2)
    assert isinstance(codec.configs, (dict, list, str)) and codec.configs
    discr = {id(p) for p in codec.parameters()} - {id(p) for p in codec.non_discr_parameters()}
    assert discr, 'non_discr_parameters() should leave out the discriminators'


def test_encodec_wrapper_codec_attributes():
    import transformers
    from audiolm_pytorch import EncodecWrapper
    config = transformers.EncodecConfig(
        target_bandwidths = [10.0, 20.0], sampling_rate = 8000, audio_channels = 1, normalize = False,
        chunk_length_s = None, overlap = None, hidden_size = 16, num_filters = 4, num_residual_layers = 1,
        upsampling_ratios = [4, 2], codebook_size = 32, codebook_dim = 16, num_lstm_layers = 1)
    codec = EncodecWrapper(config = config, bandwidth = 10.)
    got = {attr: getattr(codec, attr) for attr in CODEC_ATTRIBUTES}
    assert got['target_sample_hz'] == 8000 and got['seq_len_multiple_of'] == got['downsample_factor'] == 8
    assert got['codebook_size'] == 32 and got['rq_groups'] == 1 and got['num_quantizers'] >= 1
    with pytest.raises(ValueError):   # the compatibility arguments are checked against the model, not ignored
        EncodecWrapper(target_sample_hz = 24000, config = config, bandwidth = 10.)
