"""Behaviour of the reference-compatibility shims (issue 15): the features added for reference keywords
(get_embeds, the contrastive modules, hierarchical MuLaN loss, SoundStorm corruption / re-masking /
self-conditioning, trainer data / schedule options, EncodecWrapper embeddings) and the shims in
``audiolm_pytorch/compat/``. The keyword walk itself is in ``test_reference_keywords.py``."""

from types import SimpleNamespace

import pytest
import torch

from audiolm_pytorch.compat import LegacyKeywordError, LegacyKeywordWarning, reset_warnings, table_for
from audiolm_pytorch.compat.audit import check_call
from tests.helpers import tiny_soundstream as shared_tiny_soundstream

# ---- shims with behaviour -------------------------------------------------------------------------------------

def tiny_soundstream(**kwargs):
    """The default strides (320 samples a frame) and spectral loss, 2 quantizers, no attention."""
    return shared_tiny_soundstream(codebook_size = 16, channels = 4, codebook_dim = 8, rq_num_quantizers = 2,
                                   strides = (2, 4, 5, 8), channel_mults = (2, 4, 8, 16), attn_depth = 0,
                                   multi_spectral_window_powers_of_two = range(6, 12), multi_spectral_n_mels = 64,
                                   stft_discriminator = False, discr_multi_scales = (1,), **kwargs)


def test_soundstream_rq_options_reach_the_quantizer_kwargs():
    codec = tiny_soundstream(rq_rotation_trick = False, rq_stochastic_sample_codes = True)
    assert codec.config['rq_kwargs'] == dict(rotation_trick = False, stochastic_sample_codes = True)
    assert 'rq_rotation_trick' not in codec.config


def test_soundstream_renamed_positionals_and_curtail_from_left():
    codec = tiny_soundstream().eval()
    x = torch.randn(1, 320 * 3 + 100)
    codes = codec.tokenize(x)
    assert torch.equal(codec.decode_from_codebook_indices(quantized_indices = codes),
                       codec.decode_from_codebook_indices(codes))
    assert torch.equal(codec.process_input(x, curtail_from_left = True), x[:, None, 100:])
    assert torch.equal(codec.process_input(x), x[:, None, :960])
    with torch.no_grad():
        left = codec(x, return_recons_only = True, curtail_from_left = True)
        assert torch.allclose(left, codec(x[..., 100:], return_recons_only = True))
    with pytest.raises(LegacyKeywordError, match = 'target='):
        codec(x, is_denoising = True)


def test_complex_stft_discr_kwargs_map_onto_the_stft_discriminator():
    from audiolm_pytorch import SoundStream
    codec = SoundStream(codebook_size = 16, channels = 4, codebook_dim = 8, rq_num_quantizers = 2, attn_depth = 0,
                        discr_multi_scales = (1,), complex_stft_discr_kwargs = dict(chan_mults = (1, 2), channels = 4,
                                                                                    strides = ((1, 2), (2, 2))))
    assert codec.config['stft_discriminator'] == dict(channel_mults = (1, 2), channels = 4, strides = ((1, 2), (2, 2)))
    with pytest.raises(LegacyKeywordError, match = 'stft_window_fn'):
        tiny_soundstream(complex_stft_discr_kwargs = dict(stft_window_fn = None))


def test_get_embeds_masks_padding():
    from audiolm_pytorch import get_embeds
    emb = torch.nn.Embedding(5, 3)
    codes = torch.tensor([[1, -1, 4]])
    out, mask = get_embeds(emb, codes, return_mask = True)
    assert torch.equal(mask, torch.tensor([[True, False, True]]))
    assert torch.equal(out[0, 0], emb.weight[1]) and torch.equal(out[0, 2], emb.weight[4])
    assert torch.equal(out[0, 1], torch.zeros(3))
    assert torch.equal(get_embeds(emb, codes, mask_pad_pos_to = None)[0, 1], emb.weight[0])


def _reference_softmax_loss(audio, text, temps, decoupled):
    """musiclm-pytorch's SoftmaxContrastiveLearning.forward, transcribed (no distribution)."""
    sims = torch.einsum('l i d, l j d -> l i j', audio, text) * temps.exp()
    exp = sims.exp()
    numerator = exp.diagonal(dim1 = -2, dim2 = -1)
    if decoupled:
        exp = exp.masked_fill(torch.eye(audio.shape[1], dtype = torch.bool), 0.)
    loss = -numerator.log() + 0.5 * (exp.sum(-1).log() + exp.sum(-2).log())
    return loss.mean(-1).sum()


def _reference_sigmoid_loss(audio, text, temps, bias):
    sims = torch.einsum('l i d, l j d -> l i j', audio, text) * temps.exp() + bias
    labels = 2 * torch.eye(audio.shape[1])[None] - 1
    return -torch.nn.functional.logsigmoid(labels * sims).sum() / audio.shape[1]


@pytest.mark.parametrize('decoupled', [False, True])
def test_softmax_contrastive_learning_matches_the_reference_formula(decoupled):
    from audiolm_pytorch import SoftmaxContrastiveLearning
    torch.manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim = -1)
    text = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim = -1)
    loss_fn = SoftmaxContrastiveLearning(layers = 2, decoupled_contrastive_learning = decoupled, init_temp = 3.)
    expected = _reference_softmax_loss(audio, text, loss_fn.temperatures.detach(), decoupled)
    assert torch.allclose(loss_fn(audio, text), expected, atol = 1e-5)
    single = SoftmaxContrastiveLearning(init_temp = 3.)
    assert torch.allclose(single(audio[0], text[0]),
                          _reference_softmax_loss(audio[:1], text[:1], single.temperatures.detach(), False), atol = 1e-5)


def test_sigmoid_contrastive_learning_matches_the_reference_formula():
    from audiolm_pytorch import SigmoidContrastiveLearning
    torch.manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim = -1)
    text = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim = -1)
    loss_fn = SigmoidContrastiveLearning(layers = 3, init_temp = 5., init_bias = -2.)
    expected = _reference_sigmoid_loss(audio, text, loss_fn.temperatures.detach(), loss_fn.bias.detach())
    loss = loss_fn(audio, text)
    assert torch.allclose(loss, expected, atol = 1e-5)
    loss.backward()
    assert loss_fn.temperatures.grad.abs().sum() > 0 and loss_fn.bias.grad.abs().sum() > 0


def tiny_mulan(**kwargs):
    from audiolm_pytorch import AudioSpectrogramTransformer, MuLaN, TextTransformer
    audio = AudioSpectrogramTransformer(dim = 16, depth = 3, heads = 2, dim_head = 8, patch_size = 4, spec_n_fft = 32,
                                        spec_win_length = 16)
    text = TextTransformer(dim = 16, depth = 3, heads = 2, dim_head = 8, num_tokens = 300, max_seq_len = 16)
    return MuLaN(audio, text, dim_latent = 8, **kwargs)


def test_mulan_uses_the_contrastive_modules_and_reads_old_checkpoints():
    from audiolm_pytorch import SigmoidContrastiveLearning, SoftmaxContrastiveLearning
    mulan = tiny_mulan()
    assert isinstance(mulan.contrast, SoftmaxContrastiveLearning)
    assert isinstance(tiny_mulan(sigmoid_contrastive_loss = True).contrast, SigmoidContrastiveLearning)
    state = mulan.state_dict()
    old = {k: v for k, v in state.items() if k != 'contrast.temperatures'}
    old['log_temperature'] = torch.tensor(1.5)   # the parameter name before the loss became a module
    fresh = tiny_mulan()
    fresh.load_state_dict(old)
    assert fresh.contrast.temperatures.item() == 1.5


def test_mulan_hierarchical_contrastive_loss_and_all_layers():
    torch.manual_seed(0)
    mulan = tiny_mulan(hierarchical_contrastive_loss = True)
    wavs, texts = torch.randn(3, 2000), torch.randint(1, 300, (3, 6))
    latents, layers = mulan.get_audio_latents(wavs, return_all_layers = True)
    assert latents.shape == (3, 8) and layers.shape[:2] == (2, 3)
    text_latents, text_layers = mulan.get_text_latents(texts, return_all_layers = True)
    assert text_layers.shape == (2, 3, 7, 16)
    loss = mulan(wavs, texts)
    plain = mulan.contrast(*mulan(wavs, texts, return_latents = True))
    assert loss.item() > plain.item()   # the intermediate-layer losses are added
    loss.backward()
    assert mulan.multi_layer_contrastive_learning.audio_latent_weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match = 'hierarchical'):
        tiny_mulan(hierarchical_contrastive_loss = True, hierarchical_contrastive_loss_layers = 3)


def test_ast_accepts_spectrograms_and_can_skip_patch_dropout():
    from audiolm_pytorch import AudioSpectrogramTransformer
    torch.manual_seed(0)
    ast = AudioSpectrogramTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, patch_size = 4, spec_n_fft = 32,
                                      spec_win_length = 16).eval()
    spec_ast = AudioSpectrogramTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, patch_size = 4,
                                           spec_n_fft = 32, spec_win_length = 16, accept_spec = True).eval()
    spec_ast.load_state_dict(ast.state_dict())
    wav = torch.randn(2, 2000)
    spec = ast.spectrogram(wav)                                   # (b, freqs, frames)
    assert torch.allclose(spec_ast(spec.transpose(1, 2)), ast(wav), atol = 1e-5)
    ast.train()
    torch.manual_seed(1)
    a = ast(wav, force_no_patch_dropout = True)
    ast.spec_aug_stretch_factor, ast.spec_aug_freq_mask, ast.spec_aug_time_mask = 1., 0, 0
    torch.manual_seed(1)
    b = ast(wav, force_no_patch_dropout = True)
    torch.manual_seed(1)
    c = ast(x = wav)                                             # reference spelling of the input
    assert a.shape == b.shape == c.shape == (2, 16)
    assert torch.allclose(b, ast.eval()(wav), atol = 1e-5)        # no augmentation, no dropout: same as eval


def tiny_storm(**kwargs):
    from audiolm_pytorch import Conformer, ConformerWrapper, SoundStorm
    net = ConformerWrapper(codebook_size = 16, num_quantizers = 1,
                           conformer = Conformer(dim = 16, depth = 1, heads = 2, dim_head = 8, conv_kernel_size = 3))
    return SoundStorm(net, **kwargs)


def _inputs_seen(model, codes, times = 24):
    seen = []
    original = model.net.forward

    def spy(x, **kw):
        seen.append(x.clone())
        return original(x, **kw)
    model.net.forward = spy
    for seed in range(times):
        torch.manual_seed(seed)
        model(codes)
    return seen


def test_soundstorm_no_replace_and_random_token_corruption():
    codes = torch.randint(0, 16, (2, 12, 1))
    mask_id = 16
    plain = _inputs_seen(tiny_storm(no_replace_prob = 0., random_token_prob = 0.), codes)
    assert all((x == mask_id).any() for x in plain)
    keep = _inputs_seen(tiny_storm(no_replace_prob = 1., random_token_prob = 0.), codes)
    # in about half of the batches every masked token keeps its true code
    assert any(torch.equal(x, codes) for x in keep) and any((x == mask_id).any() for x in keep)
    rand = _inputs_seen(tiny_storm(no_replace_prob = 0., random_token_prob = 1.), codes)
    replaced = [x for x in rand if not (x == mask_id).any()]
    assert replaced and any(not torch.equal(x, codes) for x in replaced)
    with pytest.raises(ValueError, match = 'no_replace_prob'):
        tiny_storm(no_replace_prob = 0.8, random_token_prob = 0.5)


def test_soundstorm_reference_defaults_and_remasking():
    import inspect
    model = tiny_storm()
    assert model.schedule_name == 'linear' and model.can_mask_prev_unmasked
    assert (model.no_replace_prob, model.random_token_prob) == (0.15, 0.1)
    assert inspect.signature(type(model).generate).parameters['filter_thres'].default == 0.7
    torch.manual_seed(0)
    out = model.generate(10, batch_size = 2)
    assert out.shape == (2, 10, 1) and out.min() >= 0 and out.max() < 16
    assert tiny_storm(can_mask_prev_unmasked = False).generate(10, batch_size = 1).shape == (1, 10, 1)


def test_soundstorm_refused_and_condition_helper():
    model = tiny_storm(num_semantic_token_ids = 5)
    with pytest.raises(LegacyKeywordError, match = 'Token-Critic'):
        tiny_storm(self_token_critic = True)
    with pytest.raises(LegacyKeywordError, match = 'Token-Critic'):
        model.generate(4, spec_decode = True)
    cond = model.maybe_get_condition(torch.randint(0, 5, (2, 6)), length = 6)
    assert cond.shape == (2, 6, 16)
    assert model.maybe_get_condition(None) is None


def test_conformer_wrapper_embeddings_and_sum_embeds():
    model = tiny_storm().eval()
    codes = torch.randint(0, 16, (2, 7, 1))
    logits, embeds = model.net(codes, return_logits_and_embeddings = True)
    assert embeds.shape == (2, 7, 16) and logits.shape == (2, 7, 1, 16)
    assert torch.allclose(model.net(x = codes, return_embeddings = True), embeds)
    extra = torch.randn(2, 7, 16)
    assert torch.allclose(model.net(codes, sum_embeds = extra), model.net(codes, cond = extra), atol = 1e-6)


# ---- trainers ---------------------------------------------------------------------------------------------------

def test_split_batches_divides_the_global_batch():
    from audiolm_pytorch.compat.trainers import _split_batches
    accelerator = SimpleNamespace(num_processes = 4)
    _, kwargs = _split_batches(None, True, (), dict(batch_size = 32, accelerator = accelerator))
    assert kwargs['batch_size'] == 8
    _, kwargs = _split_batches(None, False, (), dict(batch_size = 32, accelerator = accelerator))
    assert kwargs['batch_size'] == 32
    with pytest.raises(LegacyKeywordError, match = 'multiple'):
        _split_batches(None, True, (), dict(batch_size = 6, accelerator = accelerator))


def _toy_trainer(tmp_path, **kwargs):
    from tests.helpers import ToyDenoiser, ToyTrainer, ToyWaves
    return ToyTrainer(ToyDenoiser(), num_train_steps = 2, batch_size = 2, dataset = ToyWaves(), lr = 1e-3,
                      results_folder = tmp_path / 'results', force_clear_prev_results = True, progress_bar = False,
                      **kwargs)


def test_trainer_valid_dataset_restore_optimizer_and_valid_batches(tmp_path):
    from tests.helpers import ToyWaves
    valid = ToyWaves(n = 3)
    trainer = _toy_trainer(tmp_path, valid_dataset = valid, num_valid_batches = 2, save_results_every = 1)
    assert trainer.valid_ds is valid and len(trainer.train_ds) == 10
    trainer.train_step()
    path = trainer.save(tmp_path / 'ckpt.pt')
    other = _toy_trainer(tmp_path)
    other.load(path, restore_optimizer = False)
    assert not other._phases[0].optimizer.state_dict()['state']   # fresh optimizer
    other.load(path)
    assert other._phases[0].optimizer.state_dict()['state']


def test_init_process_group_timeout_reaches_the_accelerator():
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    from audiolm_pytorch.compat.trainers import _init_process_group_timeout
    _, kwargs = _init_process_group_timeout(None, 60, (), dict(accelerate_kwargs = dict(mixed_precision = 'no')))
    handlers = kwargs['accelerate_kwargs']['kwargs_handlers']
    assert kwargs['accelerate_kwargs']['mixed_precision'] == 'no'
    assert len(handlers) == 1 and isinstance(handlers[0], InitProcessGroupKwargs)
    assert handlers[0].timeout == timedelta(seconds = 60)


def test_soundstream_trainer_discriminator_schedule_and_legacy_keywords(tmp_path):
    from audiolm_pytorch import SoundStreamTrainer
    from tests.helpers import ToyWaves
    reset_warnings()
    codec = tiny_soundstream()
    with pytest.warns(LegacyKeywordWarning, match = 'dataloader_drop_last'):
        trainer = SoundStreamTrainer(codec, num_train_steps = 2, batch_size = 2, dataset = ToyWaves(length = 640),
                                     warmup_steps = 0, discr_warmup_steps = 4, split_batches = False,
                                     dataloader_drop_last = True, val_dataset = ToyWaves(n = 2, length = 640),
                                     results_folder = tmp_path / 'r', force_clear_prev_results = True,
                                     progress_bar = False, use_ema = False)
    generator, discriminator = trainer._phases
    assert generator.scheduler is None
    assert discriminator.optimizer.param_groups[0]['lr'] == pytest.approx(2e-4 / 4)   # first warmup step
    assert len(trainer.valid_ds) == 2
    codes = trainer.tokenize(torch.randn(1, 640))
    assert codes.shape == (1, 2, 2)
    trainer.print(msg = 'reference spelling of message')


def test_semantic_trainer_positional_swap():
    from audiolm_pytorch import SemanticTransformer
    from audiolm_pytorch.compat.trainers import _semantic_trainer_positional
    transformer = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1)
    wav2vec = SimpleNamespace(codebook_size = 10)
    args, _ = _semantic_trainer_positional(None, (wav2vec, transformer), {})
    assert args == (transformer, wav2vec)
    args, _ = _semantic_trainer_positional(None, (transformer, wav2vec), {})
    assert args == (transformer, wav2vec)


def test_mulan_trainer_defaults_to_len_dataset_steps_and_trains_with_lion(tmp_path):
    from audiolm_pytorch import MuLaNTrainer

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return 'a text', torch.randn(2000)
    common = dict(batch_size = 2, results_folder = tmp_path / 'r', force_clear_prev_results = True,
                  progress_bar = False)
    trainer = MuLaNTrainer(tiny_mulan(), Pairs(), **common)
    assert trainer.num_train_steps == 4
    kwargs = trainer.data_tuple_to_kwargs((['x', 'y'], torch.randn(2, 2000)))
    assert kwargs['raw_texts'] == ['x', 'y'] and kwargs['wavs'].shape == (2, 2000)
    from audiolm_pytorch.trainers.lion import Lion
    lion = MuLaNTrainer(tiny_mulan(), Pairs(), use_lion = True, lr = 1e-4, **common)
    assert isinstance(lion._phases[0].optimizer.optimizer, Lion)
    before = [p.detach().clone() for p in lion.mulan.parameters()]
    lion.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, lion.mulan.parameters()))


def test_lion_step_follows_the_paper_update():
    from audiolm_pytorch.trainers.lion import Lion
    p = torch.nn.Parameter(torch.tensor([1., -2., 3.]))
    opt = Lion([p], lr = 0.1, betas = (0.9, 0.99), weight_decay = 0.5)
    p.grad = torch.tensor([0.5, -1., 0.])
    opt.step()
    # m = 0: update = sign(0.1 * g) = [1, -1, 0]; p = p * (1 - 0.1 * 0.5) - 0.1 * update
    assert torch.allclose(p.detach(), torch.tensor([1., -2., 3.]) * 0.95 - 0.1 * torch.tensor([1., -1., 0.]))
    assert torch.allclose(opt.state[p]['exp_avg'], 0.01 * torch.tensor([0.5, -1., 0.]))


# ---- codecs / wrappers -------------------------------------------------------------------------------------------

def tiny_encodec():
    import transformers

    from audiolm_pytorch import EncodecWrapper
    config = transformers.EncodecConfig(
        target_bandwidths = [10.0, 20.0], sampling_rate = 8000, audio_channels = 1, normalize = False,
        chunk_length_s = None, overlap = None, hidden_size = 16, num_filters = 4, num_residual_layers = 1,
        upsampling_ratios = [4, 2], codebook_size = 32, codebook_dim = 16, num_lstm_layers = 1)
    return EncodecWrapper(config = config, bandwidth = 10.)


def test_encodec_wrapper_embeddings_decode_and_reference_positional_order():
    codec = tiny_encodec()
    wave = torch.randn(2, 800)
    emb, codes, loss = codec(wave, 8000, True)               # reference order: (x, input_sample_hz, return_encoded)
    assert loss is None and codes.shape[:2] == (2, 100) and emb.shape[:2] == (2, 100)
    assert codec(x = wave)[0] is None
    assert torch.allclose(codec.get_emb_from_indices(codes), emb)
    assert torch.allclose(codec.decode(emb), codec.decode_from_codebook_indices(quantized_indices = codes), atol = 1e-5)
    resampled = codec(torch.randn(2, 1600), 16000)[1]
    assert resampled.shape == codes.shape


def test_encodec_wrapper_without_arguments_reads_only_the_local_cache(monkeypatch):
    import transformers

    from audiolm_pytorch import EncodecWrapper

    def no_cache(*args, **kwargs):
        assert kwargs.get('local_files_only') is True and args[0] == 'facebook/encodec_24khz'
        raise OSError('not in the cache')
    monkeypatch.setattr(transformers.EncodecModel, 'from_pretrained', no_cache)
    with pytest.raises(ValueError, match = 'huggingface-cli download facebook/encodec_24khz'):
        EncodecWrapper()


def test_musiclm_forward_reference_spelling():
    assert check_call('MusicLM', 'forward', 'text', ['a song']) == 'accepted'
    assert table_for('MusicLM')['forward']['text'].to == 'texts'


def test_semantic_wrapper_embed_text_and_prime_rate(monkeypatch):
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerWrapper
    transformer = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1)
    wrapper = SemanticTransformerWrapper(transformer = transformer)
    monkeypatch.setattr(transformer, 'embed_text', lambda texts: ('embedded', texts))
    assert wrapper.embed_text(['hi']) == ('embedded', ['hi'])
    from audiolm_pytorch.compat.lm import _prime_wave_input_sample_hz
    obj = SimpleNamespace(codec = SimpleNamespace(target_sample_hz = 8000))
    _, kwargs = _prime_wave_input_sample_hz(obj, 16000, (), dict(prime_wave = torch.randn(1, 1600)))
    assert kwargs['prime_wave'].shape == (1, 800)


def test_semantic_transformer_return_loss_drops_the_last_id_as_the_reference():
    from audiolm_pytorch import SemanticTransformer
    model = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1).eval()
    ids = torch.randint(0, 10, (2, 7))
    assert torch.allclose(model(ids = ids, return_loss = True), model(ids = ids[:, :-1]))
    assert torch.allclose(model(ids = ids, unique_consecutive = False), model(ids = ids))


def test_average_valid_loss_over_grad_accum_every_sets_the_validation_batches():
    from audiolm_pytorch.compat.trainers import _average_valid_loss
    assert _average_valid_loss(None, True, (), dict(grad_accum_every = 4))[1]['num_valid_batches'] == 4
    assert 'num_valid_batches' not in _average_valid_loss(None, False, (), dict(grad_accum_every = 4))[1]


def test_soundstorm_trainer_warmup_gives_the_learning_rate_of_a_step(tmp_path):
    from audiolm_pytorch import SoundStormTrainer
    model = tiny_storm()
    codes = [torch.randint(0, 16, (12, 1)) for _ in range(6)]

    class Codes(torch.utils.data.Dataset):
        def __len__(self):
            return len(codes)

        def __getitem__(self, i):
            return codes[i]
    trainer = SoundStormTrainer(model, num_train_steps = 8, batch_size = 2, dataset = Codes(), num_warmup_steps = 4,
                                lr = 1e-3, results_folder = tmp_path / 'r', force_clear_prev_results = True,
                                progress_bar = False)
    # the reference schedule: linear from initial_lr (1e-5) to lr over the warmup, then cosine annealing
    assert trainer.warmup(0) == pytest.approx(1e-5) and trainer.warmup(2) == pytest.approx((1e-5 + 1e-3) / 2)
    lrs = []
    for _ in range(8):
        lrs.append(trainer._phases[0].optimizer.param_groups[0]['lr'])
        trainer.train_step()
    assert lrs[:4] == pytest.approx([trainer.warmup(s) for s in range(4)])
    assert lrs[4] == pytest.approx(1e-3) and lrs[4] > lrs[5] > lrs[6] > lrs[7] > 0   # CosineAnnealingLR(T_max=8)


def _remasked_during_generation(model, seeds = range(4)) -> bool:
    """Whether some level-0 token visible to the net at one decoding step is a mask token at a later step."""
    mask_id = model.net.mask_id
    seen = []
    original = model.net.forward

    def spy(x, **kw):
        seen.append(x.clone())
        return original(x, **kw)
    model.net.forward = spy
    for seed in seeds:
        seen.clear()
        torch.manual_seed(seed)
        model.generate(24, batch_size = 2, steps = 8)
        for before, after in zip(seen, seen[1:]):
            if ((before[..., 0] != mask_id) & (after[..., 0] == mask_id)).any():
                return True
    return False


def test_can_mask_prev_unmasked_remasks_revealed_tokens_only_when_true():
    torch.manual_seed(0)
    model = tiny_storm()
    assert _remasked_during_generation(model)
    model.can_mask_prev_unmasked = False
    assert not _remasked_during_generation(model)


def test_semantic_trainer_accepts_the_reference_positional_order(tmp_path):
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerTrainer
    from tests.helpers import TINY_LM, ToyWaves, spectral_tokenizer
    wav2vec = spectral_tokenizer()
    transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **TINY_LM)
    common = dict(num_train_steps = 1, batch_size = 2, dataset = ToyWaves(length = 3200), progress_bar = False,
                  results_folder = tmp_path / 'r', force_clear_prev_results = True)
    trainer = SemanticTransformerTrainer(wav2vec, transformer, **common)          # reference order
    assert trainer.transformer is transformer and trainer.wav2vec is wav2vec
    trainer = SemanticTransformerTrainer(transformer, wav2vec, drop_last = False, split_batches = False, **common)
    assert trainer.transformer is transformer


def test_contrastive_losses_and_get_embeds_equal_the_reference_packages(assets_dir):
    """Values written by musiclm-pytorch 0.2.8 / audiolm-pytorch 2.4.0 themselves
    (scripts/make_reference_compat_values.py, run once in the reference virtualenv)."""
    from audiolm_pytorch import SigmoidContrastiveLearning, SoftmaxContrastiveLearning, get_embeds
    ref = torch.load(assets_dir / 'reference_compat_values.pt')
    audio, text = ref['audio'], ref['text']
    for decoupled in (False, True):
        loss = SoftmaxContrastiveLearning(layers = 2, decoupled_contrastive_learning = decoupled, init_temp = 3)
        assert torch.allclose(loss(audio, text), ref[f'softmax_decoupled_{decoupled}'], atol = 1e-5)
    sigmoid = SigmoidContrastiveLearning(layers = 2, init_temp = 5, init_bias = -2)
    assert torch.allclose(sigmoid(audio, text), ref['sigmoid'], atol = 1e-5)
    assert torch.allclose(SoftmaxContrastiveLearning()(audio[0], text[0]), ref['softmax_single'], atol = 1e-5)

    embedding = torch.nn.Embedding(5, 3)
    embedding.weight.data.copy_(ref['embedding_weight'])
    embeds, mask = get_embeds(embedding, ref['codes'], return_mask = True)
    assert torch.equal(embeds, ref['embeds']) and torch.equal(mask, ref['mask'])
    assert torch.equal(get_embeds(embedding, ref['codes'], mask_pad_pos_to = None), ref['embeds_no_fill'])


def test_soundstorm_input_frames_holding_pad_id_are_padding():
    model = tiny_storm()
    codes = torch.randint(0, 16, (2, 10, 1))
    padded = codes.clone()
    padded[1, 6:] = -1
    mask = torch.ones(2, 10, dtype = torch.bool)
    mask[1, 6:] = False
    torch.manual_seed(3)
    by_pad_id = model(padded)[0]
    torch.manual_seed(3)
    by_mask = model(codes, mask = mask)[0]
    assert torch.allclose(by_pad_id, by_mask)


def test_soundstorm_self_conditioning_trains_and_generates():
    torch.manual_seed(0)
    model = tiny_storm(self_cond = True, self_cond_train_prob = 1.)
    seen = []
    original = model.net.forward

    def spy(x, **kw):
        seen.append(kw)
        return original(x, **kw)
    model.net.forward = spy
    loss, _ = model(torch.randint(0, 16, (2, 10, 1)))
    assert [('return_embeddings' in kw, 'sum_embeds' in kw) for kw in seen] == [(True, False), (False, True)]
    loss.backward()
    assert model.to_self_cond.weight.grad.abs().sum() > 0 and model.null_embed.grad is None  # first pass is no-grad
    model.self_cond_train_prob = 0.
    model.zero_grad()
    model(torch.randint(0, 16, (2, 10, 1)))[0].backward()
    assert model.null_embed.grad.abs().sum() > 0
    seen.clear()
    out = model.generate(8, batch_size = 2, steps = 3)
    assert out.shape == (2, 8, 1) and all(kw.get('return_logits_and_embeddings') for kw in seen)
    assert torch.allclose(seen[0]['sum_embeds'], model.to_self_cond(model.null_embed).expand(2, 8, -1), atol = 1e-6)
    assert not torch.allclose(seen[1]['sum_embeds'], seen[0]['sum_embeds'])   # later steps see the last embeddings
