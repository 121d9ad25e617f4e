"""Write the golden files under ``tests/golden/``: tiny seeded models and their reference outputs.

Each model gets two files:

* ``<name>.safetensors``: the weights, written by the library's own checkpoint format (``model.save``), whose
  metadata holds the model kind and its constructor config. Every structural keyword argument is passed
  explicitly (the signature's defaults are filled in), so a later change of a default does not change the
  model a golden file rebuilds; a file written today must keep loading.
* ``<name>.io.safetensors``: the fixed inputs (``input.*``) and the outputs (``output.*``) computed from them.

``tests/test_golden.py`` rebuilds every model with ``init_and_load_from``, recomputes the outputs from the
stored inputs with the same ``OUTPUTS`` functions and compares them. Regenerate the files only when a change
of numbers is intended (and say so in the commit):

    PYTHONPATH=$PWD python scripts/make_golden.py
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch

GOLDEN_DIR = Path(__file__).resolve().parent.parent / 'tests' / 'golden'


def explicit(cls, **given) -> dict:
    """``given`` plus every other keyword argument of ``cls.__init__`` at its current default."""
    kwargs = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == 'self' or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
            continue
        if name in given:
            kwargs[name] = given[name]
        elif parameter.default is not inspect.Parameter.empty:
            value = parameter.default
            kwargs[name] = list(value) if isinstance(value, (tuple, range)) else value
        else:
            raise TypeError(f'{cls.__name__}: required argument {name!r} not given')
    unknown = set(given) - set(kwargs)
    if unknown:
        raise TypeError(f'{cls.__name__} has no arguments {sorted(unknown)}')
    return kwargs


# --------------------------------------------------------------------------------------------------------
# the models (built once, here; the test rebuilds them from the files)
# --------------------------------------------------------------------------------------------------------

def build_soundstream():
    from audiolm_pytorch import SoundStream
    return SoundStream(**explicit(
        SoundStream, channels = 4, strides = [2, 2], channel_mults = [2, 4], codebook_dim = 8, codebook_size = 16,
        rq_num_quantizers = 3, enc_cycle_dilations = [1, 3], dec_cycle_dilations = [1, 3], use_local_attn = True,
        attn_window_size = 8, attn_depth = 1, attn_heads = 2, attn_dim_head = 8, target_sample_hz = 800,
        discr_multi_scales = [1], multi_spectral_window_powers_of_two = [5, 6], multi_spectral_n_mels = 8,
        multi_scale_discr_kwargs = dict(channels = 4, layers = 2, groups = [2, 4], chan_max = 16),
        stft_discriminator = dict(channels = 4, strides = [[1, 2], [2, 2]], channel_mults = [1, 2], n_fft = 64,
                                  hop_length = 16, win_length = 64)))


def warm_soundstream(model):
    """One training-mode pass initialises the codebooks from the latents (k-means init): an untrained codec's
    codebooks are all zeros and would give one code everywhere."""
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 320) * 0.3, return_recons_only = True)
    return model


LM_SIZES = dict(dim = 16, depth = 2, heads = 2, dim_head = 8, ff_mult = 2., cond_dim = 8, has_condition = True,
                cond_drop_prob = 0.)


def build_semantic():
    from audiolm_pytorch import SemanticTransformer
    return SemanticTransformer(**explicit(SemanticTransformer, num_semantic_tokens = 12, **LM_SIZES))


def build_coarse():
    from audiolm_pytorch import CoarseTransformer
    return CoarseTransformer(**explicit(CoarseTransformer, num_semantic_tokens = 12, codebook_size = 16,
                                        num_coarse_quantizers = 2, rq_groups = 1, **LM_SIZES))


def build_fine():
    from audiolm_pytorch import FineTransformer
    return FineTransformer(**explicit(FineTransformer, num_coarse_quantizers = 2, num_fine_quantizers = 2,
                                      codebook_size = 16, rq_groups = 1, **LM_SIZES))


def build_soundstorm():
    from audiolm_pytorch import ConformerWrapper, SoundStorm
    from audiolm_pytorch.nn.conformer import Conformer
    conformer = explicit(Conformer, dim = 16, depth = 2, dim_head = 8, heads = 2, ff_mult = 2, conv_kernel_size = 5)
    net = ConformerWrapper(**explicit(ConformerWrapper, codebook_size = 16, num_quantizers = 3,
                                      conformer = conformer, grouped_quantizers = 1))
    kwargs = explicit(SoundStorm, net = net, num_semantic_token_ids = 10, steps = 4)
    for attached in ('soundstream', 'wav2vec', 'spear_tts_text_to_semantic'):
        del kwargs[attached]   # attached modules are not part of a SoundStorm checkpoint
    return SoundStorm(**kwargs)


def build_mulan():
    from audiolm_pytorch import MuLaN
    from audiolm_pytorch.musiclm.ast import AudioSpectrogramTransformer
    from audiolm_pytorch.musiclm.text import TextTransformer
    audio = AudioSpectrogramTransformer(**explicit(
        AudioSpectrogramTransformer, dim = 16, depth = 1, heads = 2, dim_head = 8, patch_size = 8, spec_n_fft = 64,
        spec_win_length = 32, spec_hop_length = 16))
    text = TextTransformer(**explicit(TextTransformer, dim = 16, depth = 1, heads = 2, dim_head = 8, num_tokens = 300,
                                      max_seq_len = 32))
    kwargs = explicit(MuLaN, audio_transformer = audio, text_transformer = text, dim_latent = 8)
    return MuLaN(**kwargs)


# --------------------------------------------------------------------------------------------------------
# fixed inputs and the outputs recorded from them
# --------------------------------------------------------------------------------------------------------

def inputs_soundstream(generator):
    t = torch.arange(320) / 800
    wave = 0.5 * torch.sin(2 * torch.pi * 110 * t) + 0.1 * torch.randn(320, generator = generator)
    return dict(wave = wave.clamp(-1, 1)[None])


def outputs_soundstream(model, inputs):
    codes = model.tokenize(inputs['wave'])
    return dict(codes = codes, decoded = model.decode_from_codebook_indices(codes),
                reconstruction = model(inputs['wave'], return_recons_only = True))


def text_embeds(generator, batch = 2):
    return torch.randn(batch, 3, 8, generator = generator)


def inputs_semantic(generator):
    return dict(ids = torch.randint(0, 12, (2, 7), generator = generator), text_embeds = text_embeds(generator))


def outputs_semantic(model, inputs):
    return dict(logits = model(ids = inputs['ids'], text_embeds = inputs['text_embeds'], cond_drop_prob = 0.))


def inputs_coarse(generator):
    return dict(semantic = torch.randint(0, 12, (2, 5), generator = generator),
                coarse = torch.randint(0, 16, (2, 4, 2), generator = generator), text_embeds = text_embeds(generator))


def outputs_coarse(model, inputs):
    semantic_logits, coarse_logits = model(semantic_token_ids = inputs['semantic'], coarse_token_ids = inputs['coarse'],
                                           text_embeds = inputs['text_embeds'], cond_drop_prob = 0.)
    return dict(semantic_logits = semantic_logits, coarse_logits = coarse_logits)


def inputs_fine(generator):
    return dict(coarse = torch.randint(0, 16, (2, 4, 2), generator = generator),
                fine = torch.randint(0, 16, (2, 4, 2), generator = generator), text_embeds = text_embeds(generator))


def outputs_fine(model, inputs):
    coarse_logits, fine_logits = model(coarse_token_ids = inputs['coarse'], fine_token_ids = inputs['fine'],
                                       text_embeds = inputs['text_embeds'], cond_drop_prob = 0.)
    return dict(coarse_logits = coarse_logits, fine_logits = fine_logits)


def inputs_soundstorm(generator):
    return dict(codes = torch.randint(0, 16, (2, 8, 3), generator = generator),
                semantic = torch.randint(0, 10, (2, 4), generator = generator),
                mask = torch.tensor([[True] * 8, [True] * 6 + [False] * 2]))


def outputs_soundstorm(model, inputs):
    codes, mask = inputs['codes'], inputs['mask']
    aligned = model.align_semantic(inputs['semantic'], codes.shape[1])
    cond = model.embed_semantic(aligned, codes.shape[0], codes.shape[1])
    masked = codes.clone()
    masked[:, 3:, 1:] = model.net.mask_id   # a partly revealed sequence, as during decoding
    logits = model.net(masked, mask = mask, cond = cond)
    return dict(logits = logits.masked_fill(~mask[:, :, None, None], 0.))   # padded frames' values are arbitrary


def inputs_mulan(generator):
    t = torch.arange(1024) / 1024
    waves = torch.stack((torch.sin(2 * torch.pi * 37 * t), torch.sin(2 * torch.pi * 91 * t) * t))
    return dict(waves = 0.5 * waves + 0.05 * torch.randn(2, 1024, generator = generator),
                texts = torch.randint(1, 300, (2, 12), generator = generator))


def outputs_mulan(model, inputs):
    audio_latents, text_latents = model(inputs['waves'], inputs['texts'], return_latents = True)
    return dict(audio_latents = audio_latents, text_latents = text_latents)


MODELS = dict(
    soundstream = (build_soundstream, inputs_soundstream, outputs_soundstream),
    semantic_transformer = (build_semantic, inputs_semantic, outputs_semantic),
    coarse_transformer = (build_coarse, inputs_coarse, outputs_coarse),
    fine_transformer = (build_fine, inputs_fine, outputs_fine),
    soundstorm = (build_soundstorm, inputs_soundstorm, outputs_soundstorm),
    mulan = (build_mulan, inputs_mulan, outputs_mulan),
)


def compute_outputs(name: str, model, inputs: dict) -> dict:
    model.eval()
    with torch.no_grad():
        return {key: value.detach().contiguous() for key, value in MODELS[name][2](model, inputs).items()}


def write(name: str, directory: Path = GOLDEN_DIR, seed: int = 1234):
    from safetensors.torch import save_file
    build, make_inputs, _ = MODELS[name]
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():   # init weights are small: spread them so the outputs depend on every parameter
        for parameter in model.parameters():
            if parameter.dtype.is_floating_point:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    if name == 'soundstream':
        warm_soundstream(model)
    inputs = make_inputs(torch.Generator().manual_seed(seed))
    outputs = compute_outputs(name, model, inputs)
    directory.mkdir(parents = True, exist_ok = True)
    model.save(directory / f'{name}.safetensors')
    tensors = {f'input.{k}': v.contiguous() for k, v in inputs.items()}
    tensors.update({f'output.{k}': v for k, v in outputs.items()})
    io_path = directory / f'{name}.io.safetensors'
    save_file(tensors, str(io_path), metadata = dict(model = name, seed = str(seed), torch = torch.__version__))
    io_path.chmod(0o644)
    return outputs


def main(argv = None):
    names = (argv if argv is not None else sys.argv[1:]) or list(MODELS)
    for name in names:
        outputs = write(name)
        sizes = ', '.join(f'{k} {tuple(v.shape)}' for k, v in outputs.items())
        print(f'{name}: {sizes}')


if __name__ == '__main__':
    main()
