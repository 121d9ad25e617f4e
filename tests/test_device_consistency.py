"""Device consistency without a GPU.

Models and inputs stay on the CPU, but every factory call inside the forward / generate / loss paths runs under
``torch.device('meta')``: a tensor created without an explicit ``device=`` becomes a meta tensor and mixing it
with the CPU model raises. On a GPU the same call would silently land on the CPU and crash the first CUDA run.
"""

from contextlib import contextmanager

import pytest
import torch
from torch import nn

from audiolm_pytorch import (
    AudioLM,
    AudioSpectrogramTransformer,
    CoarseTransformer,
    CoarseTransformerWrapper,
    ConformerWrapper,
    FineTransformer,
    FineTransformerWrapper,
    MuLaN,
    MuLaNEmbedQuantizer,
    MusicLM,
    SemanticTransformer,
    SemanticTransformerWrapper,
    SoundStorm,
    SoundStream,
    TextTransformer,
)
from audiolm_pytorch.audio import MelSpectrogram, resample
from audiolm_pytorch.soundstorm_pipeline import SemanticToAudio
from tests.helpers import ASSETS, StubSemanticTokenizer

LM = dict(dim = 32, depth = 1, heads = 2, dim_head = 16)


@contextmanager
def stray_factories_on_meta():
    """Factory calls lacking ``device=`` produce meta tensors inside this block."""
    with torch.device('meta'):
        yield


def assert_cpu(*tensors):
    for t in tensors:
        if isinstance(t, (list, tuple)):
            assert_cpu(*t)
        elif isinstance(t, torch.Tensor):
            assert t.device.type == 'cpu', f'output on {t.device}'


def mark_codebooks_initialised(module):
    """vector-quantize-pytorch's k-means init ends with ``initted.copy_(tensor(True))``: a legitimate host ->
    device copy that only fails on meta. Levels skipped by quantizer dropout would init inside the check."""
    for m in module.modules():
        if isinstance(getattr(m, 'initted', None), torch.Tensor):
            m.initted.fill_(True)


def test_detector_catches_a_missing_device():
    with stray_factories_on_meta():
        assert torch.zeros(2).is_meta and torch.arange(3).is_meta
        cpu = torch.ones(2, device = 'cpu')
        assert not cpu.is_meta and not cpu.new_zeros(2).is_meta and not torch.zeros_like(cpu).is_meta
        with pytest.raises(Exception):
            _ = cpu + torch.zeros(2)


# ---------------------------------------------------------------------------------------------------------
# the tiny codec of these tests
# ---------------------------------------------------------------------------------------------------------

def tiny_soundstream(**kwargs):
    return SoundStream(codebook_size = 16, rq_num_quantizers = 4, channels = 8, strides = (2, 2),
                       channel_mults = (2, 4), codebook_dim = 8, attn_window_size = 8, attn_heads = 2,
                       attn_dim_head = 8, use_local_attn = True, target_sample_hz = 800,
                       stft_discriminator = dict(channels = 4, n_fft = 64, hop_length = 16, win_length = 64),
                       multi_scale_discr_kwargs = dict(channels = 4, chan_max = 16),
                       multi_spectral_window_powers_of_two = (5, 6), **kwargs)


def tiny_quantizer(conditioning_dims = (16, 16, 16)):
    audio = AudioSpectrogramTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, patch_size = 8,
                                        spec_n_fft = 64, spec_win_length = 32, spec_hop_length = 16)
    text = TextTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, num_tokens = 300, max_seq_len = 32)
    mulan = MuLaN(audio_transformer = audio, text_transformer = text, dim_latent = 16)
    return MuLaNEmbedQuantizer(mulan = mulan, conditioning_dims = conditioning_dims, rq_num_quantizers = 2,
                               codebook_size = 8)


# ---------------------------------------------------------------------------------------------------------
# SoundStream
# ---------------------------------------------------------------------------------------------------------

def test_soundstream_paths():
    model = tiny_soundstream()
    wave = torch.randn(2, 512) * 0.1
    model.train()
    model(wave)
    mark_codebooks_initialised(model)
    with stray_factories_on_meta():
        loss = model(wave)
        loss.backward()
        loss, breakdown = model(wave, return_loss_breakdown = True)
        discr = model(wave, return_discr_loss = True, apply_grad_penalty = True)
        discr.backward()
        separate = model(wave, return_discr_losses_separately = True, apply_grad_penalty = True)
        losses = model(wave, return_all_losses = True, apply_grad_penalty = True)
        recons = model(torch.randn(512, device = 'cpu') * 0.1, return_recons_only = True)
        resampled = model(torch.randn(2, 1024, device = 'cpu') * 0.1, input_sample_hz = 1600, return_codes_only = True)
    assert_cpu(loss, discr, [l for _, l in separate], recons, resampled)
    assert all(t.device.type == 'cpu' for t in losses if isinstance(t, torch.Tensor))

    model.eval()
    with stray_factories_on_meta(), torch.no_grad():
        codes = model.tokenize(wave)
        codes_some = model.tokenize(wave, num_quantizers = 2)
        out = model.decode_from_codebook_indices(codes)
        enc_state, dec_state = model.init_encoder_state(2), model.init_decoder_state(2)
        chunk_codes, enc_state = model.encode_chunk(wave[:, :256], enc_state)
        chunk_codes2, enc_state = model.encode_chunk(wave[:, 256:], enc_state)
        empty, _ = model.encode_chunk(wave[:, :0], enc_state)
        audio, dec_state = model.decode_chunk(chunk_codes, dec_state)
        audio2, dec_state = model.decode_chunk(chunk_codes2, dec_state)
    assert_cpu(codes, codes_some, out, chunk_codes, empty, audio, audio2)
    assert torch.equal(torch.cat((chunk_codes, chunk_codes2), dim = 1), codes)


# ---------------------------------------------------------------------------------------------------------
# semantic / coarse / fine stages and AudioLM
# ---------------------------------------------------------------------------------------------------------

def warm(codec):
    codec.train()
    codec(torch.randn(2, 512) * 0.1)
    mark_codebooks_initialised(codec)
    return codec.eval()


def test_stage_wrappers_forward_and_generate():
    codec = warm(tiny_soundstream())
    wav2vec = StubSemanticTokenizer(codebook_size = 10)
    cond = dict(has_condition = True, cond_dim = 8, cond_drop_prob = 0.5)
    semantic = SemanticTransformer(num_semantic_tokens = 10, **cond, **LM)
    coarse = CoarseTransformer(num_semantic_tokens = 10, codebook_size = 16, num_coarse_quantizers = 2, **cond, **LM)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **cond, **LM)
    sw = SemanticTransformerWrapper(transformer = semantic, wav2vec = wav2vec, mask_prob = 0.3,
                                    unique_consecutive = False).train()
    cw = CoarseTransformerWrapper(transformer = coarse, codec = codec, wav2vec = wav2vec, mask_prob = 0.3,
                                    unique_consecutive = False).train()
    fw = FineTransformerWrapper(transformer = fine, codec = codec, mask_prob = 0.3).train()
    wave, embeds = torch.randn(2, 128) * 0.1, torch.randn(2, 3, 8)
    sem_ids = torch.randint(0, 10, (2, 6))
    sem_ids[1, 4:] = -1
    coarse_ids = torch.randint(0, 16, (2, 5, 2))
    coarse_ids[1, 3:] = -1
    fine_ids = torch.randint(0, 16, (2, 5, 2))
    fine_ids[1, 3:] = -1

    with stray_factories_on_meta():
        losses = [
            sw(raw_wave = wave, text_embeds = embeds, return_loss = True),
            sw(semantic_token_ids = sem_ids, text_embeds = embeds, return_loss = True),
            cw(raw_wave = wave, text_embeds = embeds, return_loss = True),
            cw(semantic_token_ids = sem_ids, coarse_token_ids = coarse_ids, text_embeds = embeds, return_loss = True),
            fw(raw_wave = wave, text_embeds = embeds, return_loss = True),
            fw(coarse_token_ids = coarse_ids, fine_token_ids = fine_ids, text_embeds = embeds, return_loss = True),
        ]
        sum(losses).backward()
    assert_cpu(losses)

    for w in (sw, cw, fw):
        w.eval()
    with stray_factories_on_meta(), torch.no_grad():
        out = []
        for kv in (True, False):
            out.append(sw.generate(max_length = 6, batch_size = 2, text_embeds = embeds, cond_scale = 2.,
                                   use_kv_cache = kv))
            out.append(sw.generate(max_length = 8, prime_wave = wave[:, :32],
                                   text_embeds = embeds[:1].expand(2, -1, -1),
                                   use_kv_cache = kv))
            out.append(cw.generate(semantic_token_ids = sem_ids, text_embeds = embeds, max_time_steps = 6,
                                   cond_scale = 2., use_kv_cache = kv, reconstruct_wave = True))
            out.append(cw.generate(semantic_token_ids = sem_ids, prime_wave = wave[:, :32], text_embeds = embeds,
                                   max_time_steps = 8, use_kv_cache = kv))
            out.append(fw.generate(coarse_token_ids = coarse_ids, text_embeds = embeds, cond_scale = 2.,
                                   use_kv_cache = kv, reconstruct_wave = True))
            out.append(fw.generate(coarse_token_ids = coarse_ids, prime_wave = wave[:, :16], text_embeds = embeds,
                                   use_kv_cache = kv, mask_out_generated_fine_tokens = True))
    assert_cpu(out)


def test_audiolm_forward():
    codec, wav2vec = warm(tiny_soundstream()), StubSemanticTokenizer(codebook_size = 10)
    cond = dict(has_condition = True, cond_dim = 8)
    semantic = SemanticTransformer(num_semantic_tokens = 10, **cond, **LM)
    coarse = CoarseTransformer(num_semantic_tokens = 10, codebook_size = 16, num_coarse_quantizers = 2, **cond, **LM)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **cond, **LM)
    audiolm = AudioLM(wav2vec = wav2vec, codec = codec, semantic_transformer = semantic, coarse_transformer = coarse,
                      fine_transformer = fine)
    with stray_factories_on_meta():
        a = audiolm(batch_size = 2, text_embeds = torch.randn(2, 2, 8, device = 'cpu'), max_length = 6,
                    max_coarse_time_steps = 5)
        b = audiolm(prime_wave = torch.randn(1, 64, device = 'cpu') * 0.1, max_length = 12, max_coarse_time_steps = 10)
    assert_cpu(a, b)


def test_stages_with_audio_conditioner():
    quantizer = tiny_quantizer()
    quantizer(wavs = torch.randn(2, 1024), namespace = 'semantic')   # k-means init outside (see test_soundstream_paths)
    common = dict(depth = 1, heads = 2, dim_head = 16, dim = 32, audio_text_condition = True, cond_dim = 16,
                  cond_drop_prob = 0.5)
    semantic = SemanticTransformer(num_semantic_tokens = 10, **common)
    coarse = CoarseTransformer(num_semantic_tokens = 10, codebook_size = 16, num_coarse_quantizers = 2, **common)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **common)
    sw = SemanticTransformerWrapper(transformer = semantic, audio_conditioner = quantizer)
    cw = CoarseTransformerWrapper(transformer = coarse, audio_conditioner = quantizer)
    fw = FineTransformerWrapper(transformer = fine, audio_conditioner = quantizer)
    wave = torch.randn(2, 1024)
    with stray_factories_on_meta():
        losses = [
            sw(raw_wave = wave, semantic_token_ids = torch.randint(0, 10, (2, 6), device = 'cpu'), return_loss = True),
            cw(raw_wave = wave, semantic_token_ids = torch.randint(0, 10, (2, 6), device = 'cpu'),
               coarse_token_ids = torch.randint(0, 16, (2, 3, 2), device = 'cpu'), return_loss = True),
            fw(raw_wave = wave, coarse_token_ids = torch.randint(0, 16, (2, 3, 2), device = 'cpu'),
               fine_token_ids = torch.randint(0, 16, (2, 3, 2), device = 'cpu'), return_loss = True),
        ]
        sum(losses).backward()
    assert_cpu(losses)
    sw.eval()
    with stray_factories_on_meta(), torch.no_grad():
        ids = sw.generate(max_length = 4, text = ['a drum', 'a flute'], cond_scale = 2.)
    assert_cpu(ids)


# ---------------------------------------------------------------------------------------------------------
# SoundStorm
# ---------------------------------------------------------------------------------------------------------

class StubGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def generate(self, *, batch_size = None, max_length = 8, **kwargs):
        return torch.randint(0, 10, (batch_size or 1, max_length), device = self.p.device)


def test_soundstorm_forward_generate_and_pipeline():
    codec = warm(tiny_soundstream())
    net = ConformerWrapper(codebook_size = 16, num_quantizers = 4,
                           conformer = dict(dim = 32, depth = 1, dim_head = 8, heads = 4, conv_kernel_size = 5))
    model = SoundStorm(net, soundstream = codec, wav2vec = StubSemanticTokenizer(codebook_size = 10))
    codes = torch.randint(0, 16, (2, 8, 4))
    sem = torch.randint(0, 10, (2, 4))
    mask = torch.ones(2, 8, dtype = torch.bool)
    mask[1, 5:] = False
    model.train()
    with stray_factories_on_meta():
        loss, _ = model(codes, cond_semantic_token_ids = sem, mask = mask)
        loss2 = model(torch.randn(2, 128, device = 'cpu') * 0.1)
        loss2 = loss2[0] if isinstance(loss2, tuple) else loss2
        (loss + loss2).backward()
    assert_cpu(loss, loss2)
    model.eval()
    pipeline = SemanticToAudio(semantic_transformer = StubGenerator(), soundstorm = model)
    with stray_factories_on_meta(), torch.no_grad():
        out = [
            model.generate(cond_semantic_token_ids = sem, steps = 2, return_codes = True),
            model.generate(cond_semantic_token_ids = sem, mask = mask, steps = 2),
            model.generate(cond_semantic_token_ids = sem, prompt_acoustic_token_ids = codes[:, :3], steps = 2,
                           cond_scale = 2., return_codes = True),
        ]
        out.append(pipeline(batch_size = 2, max_length = 4, steps = 2))
    assert_cpu(out)


def test_soundstorm_unconditioned_generate():
    net = ConformerWrapper(codebook_size = 16, num_quantizers = 3,
                           conformer = dict(dim = 32, depth = 1, dim_head = 8, heads = 4, conv_kernel_size = 5),
                           grouped_quantizers = 2)
    model = SoundStorm(net).eval()
    with stray_factories_on_meta(), torch.no_grad():
        codes = model.generate(6, batch_size = 2, steps = 2, return_codes = True)
    assert_cpu(codes)


# ---------------------------------------------------------------------------------------------------------
# MuLaN / MusicLM
# ---------------------------------------------------------------------------------------------------------

def test_mulan_quantizer_and_musiclm():
    quantizer = tiny_quantizer()
    quantizer(wavs = torch.randn(2, 1024), namespace = 'semantic')   # k-means init outside (see test_soundstream_paths)
    mulan = quantizer.mulan.train()
    wave = torch.randn(2, 1024)
    with stray_factories_on_meta():
        loss = mulan(wave, raw_texts = ['a drum', 'a long flute melody'])
        loss.backward()
        sims = mulan(wave, raw_texts = ['a', 'b'], return_similarities = True)
        pairwise = mulan(wave, raw_texts = ['a', 'b'], return_pairwise_similarities = True)
        latents = mulan.get_text_latents(raw_texts = ['x'])
    assert_cpu(loss, sims, pairwise, latents)
    mulan.eval()
    with stray_factories_on_meta(), torch.no_grad():
        embeds = [quantizer(wavs = wave, namespace = 'semantic'), quantizer(texts = ['a drum'], namespace = 'coarse'),
                  quantizer(texts = torch.randint(1, 200, (2, 5), device = 'cpu'), namespace = 'fine')]
    assert_cpu(embeds)

    class StubAudioLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, text = None, batch_size = 1, **kwargs):
            return torch.randn(batch_size, 1024, device = self.p.device) * 0.1

    musiclm = MusicLM(audio_lm = StubAudioLM(), mulan_embed_quantizer = quantizer)
    with stray_factories_on_meta(), torch.no_grad():
        music, scores, best = musiclm(['a jazz trio', 'pads'], num_samples = 2, return_scores = True)
    assert_cpu(music, scores, best)


# ---------------------------------------------------------------------------------------------------------
# semantic tokenizers and audio helpers
# ---------------------------------------------------------------------------------------------------------

def test_spectral_and_hubert_tokenizers_and_audio_helpers():
    from audiolm_pytorch import HubertWithKmeans
    from audiolm_pytorch.semantic.spectral import SpectralKmeansTokenizer as SpectralTokenizer
    spectral = SpectralTokenizer(codebook_size = 8, target_sample_hz = 800, frame_hz = 50, n_mels = 8)
    wave = torch.randn(2, 800)
    with stray_factories_on_meta():
        spectral.fit(wave, epochs = 2.)
    with stray_factories_on_meta(), torch.no_grad():
        ids = [spectral(wave), spectral(torch.randn(2, 1600, device = 'cpu'), input_sample_hz = 1600),
               spectral(wave, flatten = False)]
    assert_cpu(ids)

    root = ASSETS / 'fairseq_hubert_tiny'
    hubert = HubertWithKmeans(root / 'tiny_hubert.pt', root / 'tiny_hubert_L2_km16.bin', output_layer = 2)
    with stray_factories_on_meta(), torch.no_grad():
        out = [hubert(torch.randn(2, 1600, device = 'cpu')),
               hubert(torch.randn(1, 3200, device = 'cpu'), input_sample_hz = 32000, flatten = False)]
    assert_cpu(out)

    mel = MelSpectrogram(sample_hz = 800, n_fft = 64, win_length = 64, hop_length = 16, n_mels = 8, log = True)
    with stray_factories_on_meta():
        spec = mel(wave)
        up = resample(wave, 800, 1600)
    assert_cpu(spec, up)


# ---------------------------------------------------------------------------------------------------------
# state that .to(device) would not move
# ---------------------------------------------------------------------------------------------------------

def test_no_plain_tensor_attributes_and_to_moves_attached_modules():
    """A tensor kept as a plain attribute (not a parameter / buffer) stays behind on ``.to(device)``."""
    codec, quantizer = tiny_soundstream(), tiny_quantizer()
    common = dict(audio_text_condition = True, cond_dim = 16, **LM)
    semantic = SemanticTransformer(num_semantic_tokens = 10, **common)
    coarse = CoarseTransformer(num_semantic_tokens = 10, codebook_size = 16, num_coarse_quantizers = 2, **common)
    fine = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 16, **common)
    net = ConformerWrapper(codebook_size = 16, num_quantizers = 4,
                           conformer = dict(dim = 32, depth = 1, dim_head = 8, heads = 4, conv_kernel_size = 5))
    wav2vec = StubSemanticTokenizer(codebook_size = 10)
    wav2vec.register_buffer('probe', torch.zeros(1))
    storm = SoundStorm(net, soundstream = codec, wav2vec = wav2vec)
    audiolm = AudioLM(wav2vec = wav2vec, codec = codec, semantic_transformer = semantic, coarse_transformer = coarse,
                      fine_transformer = fine, audio_conditioner = quantizer)
    mel = MelSpectrogram(sample_hz = 800, n_fft = 64, win_length = 64, hop_length = 16, n_mels = 8)

    for model in (audiolm, storm, mel):
        for name, module in model.named_modules():
            for key, value in vars(module).items():
                if key in ('_parameters', '_buffers', '_modules'):
                    continue
                values = list(value.values()) if isinstance(value, dict) else \
                    list(value) if isinstance(value, (list, tuple)) else [value]
                assert not any(isinstance(v, torch.Tensor) for v in values), f'{name}.{key} is a plain tensor'

    # .to() reaches every attached module (SoundStorm keeps its codec / tokenizer outside the state dict)
    for model, attached in ((audiolm, (codec, wav2vec, quantizer, semantic, coarse, fine)), (storm, (codec, wav2vec))):
        model.to(torch.float64)
        for module in attached:
            floats = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
            assert floats and all(t.dtype == torch.float64 for t in floats), type(module).__name__
        model.to(torch.float32)
