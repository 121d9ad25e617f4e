"""MuLaN: audio / text towers, contrastive training, distributed gather, embed quantizer."""

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from audiolm_pytorch import AudioSpectrogramTransformer, MuLaN, MuLaNEmbedQuantizer, TextTransformer
from audiolm_pytorch.musiclm.ast import AxialRotary2D, random_mask_along, time_stretch
from audiolm_pytorch.musiclm.mulan import softmax_contrastive_loss
from audiolm_pytorch.musiclm.text import byte_tokenize
from audiolm_pytorch.nn.positions import apply_rotary
from tests.helpers import NAN


def tiny_mulan(**kwargs):
    audio = AudioSpectrogramTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, patch_size = 8,
                                        spec_n_fft = 64, spec_win_length = 32, spec_hop_length = 16)
    text = TextTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, num_tokens = 300, max_seq_len = 64)
    return MuLaN(audio_transformer = audio, text_transformer = text, dim_latent = 16, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# seed 003, as written (imports from audiolm_pytorch)
# ---------------------------------------------------------------------------------------------------------

def test_seed_usage_at_seed_dims():
    audio_transformer = AudioSpectrogramTransformer(
        dim = 512, depth = 6, heads = 8, dim_head = 64, spec_n_fft = 128, spec_win_length = 24,
        spec_aug_stretch_factor = 0.8)
    text_transformer = TextTransformer(dim = 512, depth = 6, heads = 8, dim_head = 64)
    mulan = MuLaN(audio_transformer = audio_transformer, text_transformer = text_transformer)

    wavs = torch.randn(2, 1024)
    texts = torch.randint(0, 20000, (2, 256))
    loss = mulan(wavs, texts)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert mulan.audio_to_latents.weight.grad is not None and mulan.text.token_emb.weight.grad is not None

    embeds = mulan.get_audio_latents(wavs)
    assert embeds.shape == (2, 128)
    embeds = mulan.get_text_latents(texts)
    assert embeds.shape == (2, 128)
    assert torch.allclose(embeds.norm(dim = -1), torch.ones(2), atol = 1e-5)

    quantizer = MuLaNEmbedQuantizer(mulan = mulan, conditioning_dims = (1024, 1024, 1024),
                                    namespaces = ('semantic', 'coarse', 'fine'))
    conds = quantizer(wavs = torch.randn(2, 1024), namespace = 'semantic')
    assert conds.shape == (2, 8, 1024)


# ---------------------------------------------------------------------------------------------------------
# audio tower
# ---------------------------------------------------------------------------------------------------------

def test_time_stretch_and_masking():
    spec = torch.randn(3, 10, 100)
    assert time_stretch(spec, 0.8).shape == (3, 10, 125)
    assert time_stretch(spec, 2.).shape == (3, 10, 50)
    # a constant spectrogram stays constant when stretched
    assert torch.allclose(time_stretch(torch.ones(1, 4, 40), 0.8), torch.ones(1, 4, 50))

    fill = torch.full((3, 1, 1), 123.)
    masked = random_mask_along(spec, 7, 2, fill)
    band = (masked == 123.).all(dim = 1)                    # (b, t): whole time frames replaced
    assert ((masked == 123.) == band[:, None, :]).all()     # nothing else replaced
    for row in band:
        idx = row.nonzero().flatten()
        assert len(idx) < 7
        if len(idx):
            assert (idx.diff() == 1).all()                  # one contiguous band
    masked = random_mask_along(spec, 4, 1, fill)
    assert ((masked == 123.).all(dim = 2).sum(dim = 1) < 4).all()


def test_axial_rotary_is_relative_in_2d():
    rotary = AxialRotary2D(16)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(qpos, kpos):
        cos_q, sin_q = rotary(torch.tensor([[qpos[0]]]), torch.tensor([[qpos[1]]]))
        cos_k, sin_k = rotary(torch.tensor([[kpos[0]]]), torch.tensor([[kpos[1]]]))
        return (apply_rotary(q, cos_q, sin_q) * apply_rotary(k, cos_k, sin_k)).sum()

    base = score((1, 2), (3, 7))
    assert torch.allclose(base, score((4, 10), (6, 15)), atol = 1e-4)      # same 2-D offset
    assert not torch.allclose(base, score((1, 2), (7, 3)), atol = 1e-3)   # swapped axes differ
    assert not torch.allclose(base, score((1, 2), (3, 8)), atol = 1e-3)


def test_audio_transformer_shapes_and_modes():
    ast = AudioSpectrogramTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, patch_size = 8,
                                      spec_n_fft = 64, spec_win_length = 32, spec_hop_length = 16)
    wav = torch.randn(3, 2000)
    ast.eval()
    out = ast(wav)
    assert out.shape == (3, 32)
    assert torch.allclose(out, ast(wav[:, None]), atol = 1e-6)             # (b, 1, n) accepted
    assert torch.allclose(out, ast(wav), atol = 1e-6)                      # eval: deterministic
    assert torch.allclose(out[1:2], ast(wav[1:2]), atol = 1e-5)             # batch independent
    assert ast(torch.randn(2, 100)).shape == (2, 32)                        # shorter than one patch: padded

    # 33 freq bins -> 4 rows; 2000 / 16 + 1 = 126 frames -> 15 columns
    assert ast(wav, return_tokens = True).shape == (3, 4 * 15, 32)

    ast.train()
    tokens = ast(wav, return_tokens = True)
    assert tokens.shape[1] < 4 * 15                                          # patch dropout (and stretch)
    assert not torch.allclose(ast(wav), ast(wav))                           # augmentation is random

    with pytest.raises(ValueError, match = 'waveform'):
        ast(torch.randn(2, 3, 100))


# ---------------------------------------------------------------------------------------------------------
# text tower
# ---------------------------------------------------------------------------------------------------------

def test_text_transformer_padding_and_raw_texts():
    text = TextTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, num_tokens = 300, max_seq_len = 16).eval()
    ids = torch.randint(1, 300, (2, 5))
    padded = F.pad(ids, (0, 4), value = 0)
    assert torch.allclose(text(ids), text(padded), atol = 1e-5)             # padding is masked out

    raw = ['soft piano', 'loud drums and bass']
    out = text(raw_texts = raw)
    assert out.shape == (2, 32)
    byte_ids = byte_tokenize(raw, 16)
    assert byte_ids.shape == (2, 16) and byte_ids.max() < 257               # truncated to max_seq_len
    assert torch.allclose(out, text(byte_ids), atol = 1e-6)
    assert torch.allclose(out[0], text(raw_texts = 'soft piano')[0], atol = 1e-5)

    with pytest.raises(ValueError, match = 'max_seq_len'):
        text(torch.ones(1, 17, dtype = torch.long))
    with pytest.raises(ValueError, match = r'\[0, 300\)'):
        text(torch.full((1, 3), 300))
    with pytest.raises(ValueError, match = 'byte tokenizer'):
        TextTransformer(dim = 8, depth = 1, num_tokens = 100)


def test_text_transformer_local_tokenizer(tmp_path):
    import tokenizers  # installed with transformers
    from transformers import PreTrainedTokenizerFast

    vocab = {'[PAD]': 0, '[UNK]': 1, 'piano': 2, 'drums': 3, 'soft': 4, 'loud': 5}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token = '[UNK]'))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object = backend, pad_token = '[PAD]', unk_token = '[UNK]').save_pretrained(tmp_path)

    text = TextTransformer(dim = 32, depth = 1, heads = 2, dim_head = 16, num_tokens = 6,
                           tokenizer_path = str(tmp_path)).eval()
    ids, mask = text.tokenize(['soft piano', 'loud drums violin'])
    assert ids.tolist() == [[4, 2, 0], [5, 3, 1]] and mask.tolist() == [[True, True, False], [True] * 3]
    assert torch.allclose(text(raw_texts = ['soft piano', 'loud drums violin']), text(ids, mask = mask), atol = 1e-6)

    missing = TextTransformer(dim = 8, depth = 1, dim_head = 8, num_tokens = 6,
                              tokenizer_path = str(tmp_path / 'nothing'))
    with pytest.raises(ValueError, match = 'local path'):
        missing(raw_texts = ['piano'])


# ---------------------------------------------------------------------------------------------------------
# MuLaN
# ---------------------------------------------------------------------------------------------------------

def test_softmax_loss_matches_cross_entropy_and_dcl_drops_positive():
    sims = torch.randn(5, 5)
    labels = torch.arange(5)
    reference = (F.cross_entropy(sims, labels) + F.cross_entropy(sims.t(), labels)) / 2
    assert torch.allclose(softmax_contrastive_loss(sims, decoupled = False), reference, atol = 1e-6)

    # DCL: raising the positive logit only lowers the loss through the numerator
    bumped = sims.clone()
    bumped[0, 0] += 3.
    delta = softmax_contrastive_loss(bumped, decoupled = True) - softmax_contrastive_loss(sims, decoupled = True)
    assert torch.allclose(delta, torch.tensor(-3. / 5), atol = 1e-5)


def paired_set(num = 4, length = 2048):
    """``num`` tones at distinct pitches (8 kHz), each paired with its own text."""
    t = torch.arange(length) / 8000
    wavs = torch.stack([torch.sin(2 * math.pi * f * t) for f in (250, 1000, 2000, 3200)[:num]])
    texts = ['soft piano', 'loud drums', 'bright violin', 'deep bass'][:num]
    return wavs, texts


@pytest.mark.parametrize('sigmoid', [False, True])
def test_contrastive_training_aligns_pairs(sigmoid):
    mulan = tiny_mulan(sigmoid_contrastive_loss = sigmoid)
    wavs, texts = paired_set()
    opt = torch.optim.Adam(mulan.parameters(), lr = 3e-3)

    mulan.eval()
    with torch.no_grad():
        initial = mulan(wavs, raw_texts = texts).item()
        initial_sims = mulan(wavs, raw_texts = texts, return_pairwise_similarities = True)
    mulan.train()   # with SpecAugment and patch dropout on
    for _ in range(60):
        loss = mulan(wavs, raw_texts = texts)
        opt.zero_grad()
        loss.backward()
        opt.step()

    mulan.eval()
    with torch.no_grad():
        final = mulan(wavs, raw_texts = texts).item()
        sims = mulan(wavs, raw_texts = texts, return_pairwise_similarities = True)   # (text, audio)
    assert final < initial - 1.
    eye = torch.eye(4, dtype = torch.bool)
    gap = lambda s: s[eye].mean() - s[~eye].mean()
    assert gap(sims) > gap(initial_sims) + 0.3                  # matched pairs pulled together, others apart
    if not sigmoid:
        matched = sims.diagonal()
        mismatched = sims.masked_fill(eye, float('-inf'))
        assert (matched > mismatched.amax(dim = 0)).all() and (matched > mismatched.amax(dim = 1)).all()
    assert torch.allclose(mulan.similarity(wavs, raw_texts = texts), sims.diagonal(), atol = 1e-5)


def test_latents_normalised_and_checkpoint_roundtrip(tmp_path):
    mulan = tiny_mulan().eval()
    wavs, texts = paired_set(2, 1024)
    audio, text = mulan(wavs, raw_texts = texts, return_latents = True)
    assert audio.shape == text.shape == (2, 16)
    assert torch.allclose(audio.norm(dim = -1), torch.ones(2), atol = 1e-5)
    assert torch.allclose(mulan.get_text_latents(texts), text, atol = 1e-6)      # strings as `texts` work too

    path = mulan.save(tmp_path / 'mulan.pt')
    loaded = MuLaN.init_and_load_from(path).eval()
    assert torch.allclose(loaded.get_audio_latents(wavs), audio, atol = 1e-6)
    assert torch.allclose(loaded.get_text_latents(raw_texts = texts), text, atol = 1e-6)

    with pytest.raises(ValueError, match = 'exactly one'):
        mulan.get_text_latents()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world, port, state, wavs, texts, queue):
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR = '127.0.0.1', MASTER_PORT = str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank = rank, world_size = world)
    try:
        mulan = tiny_mulan().eval()
        mulan.load_state_dict(state)
        shard = slice(rank * 2, rank * 2 + 2) if rank == 0 else slice(2, 5)      # unequal shards: 2 and 3
        loss = mulan(wavs[shard], texts[shard])
        loss.backward()
        grad = mulan.text.token_emb.weight.grad.clone()
        dist.all_reduce(grad)
        # plain lists: a tensor would be shared through a file descriptor that dies with this process
        queue.put((rank, loss.item(), (grad / world).tolist()))                  # what DDP's averaging gives
    finally:
        dist.destroy_process_group()


def test_distributed_loss_and_gradients_match_single_process():
    mp = torch.multiprocessing.get_context('spawn')
    mulan = tiny_mulan().eval()
    wavs = torch.randn(5, 1024)
    texts = torch.randint(1, 300, (5, 6))
    loss = mulan(wavs, texts)
    loss.backward()

    queue, port = mp.Queue(), _free_port()
    state = {k: v.clone() for k, v in mulan.state_dict().items()}
    procs = [mp.Process(target = _distributed_worker, args = (rank, 2, port, state, wavs, texts, queue))
             for rank in range(2)]
    for proc in procs:
        proc.start()
    try:
        results = [queue.get(timeout = 120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout = 60)
            if proc.is_alive():   # a hung worker must not outlive the test
                proc.terminate()
    assert all(proc.exitcode == 0 for proc in procs)
    for _, rank_loss, grad in results:
        assert math.isclose(rank_loss, loss.item(), rel_tol = 1e-5)            # every rank: global-batch loss
        assert torch.allclose(torch.tensor(grad), mulan.text.token_emb.weight.grad, atol = 1e-6)


# ---------------------------------------------------------------------------------------------------------
# embed quantizer
# ---------------------------------------------------------------------------------------------------------

def test_embed_quantizer_namespaces(tmp_path):
    mulan = tiny_mulan()
    quantizer = MuLaNEmbedQuantizer(mulan = mulan, conditioning_dims = (16, 24, 40), rq_num_quantizers = 4,
                                    codebook_size = 32)
    wavs, texts = paired_set(3, 1024)
    quantizer.train()
    for namespace, dim in (('semantic', 16), ('coarse', 24), ('fine', 40)):
        conds = quantizer(wavs = wavs, namespace = namespace)
        assert conds.shape == (3, 4, dim)
        assert quantizer(texts = texts, namespace = namespace).shape == (3, 4, dim)
        assert quantizer.dim_for(namespace) == dim
    assert not mulan.training                                                    # frozen MuLaN runs in eval

    quantizer.eval()
    latents = quantizer.get_latents(wavs = wavs)
    indices = quantizer.get_indices(latents)
    assert indices.shape == (3, 4) and indices.max() < 32
    conds = quantizer(wavs = wavs, namespace = 'coarse')
    expected = torch.stack([quantizer.cond_embeddings['coarse'][q, indices[:, q]] for q in range(4)], dim = 1)
    assert torch.equal(conds, expected)
    assert quantizer(wavs = wavs).shape == (3, 4, 16)                            # default namespace: first
    quantizer.set_default_namespace('fine')
    assert quantizer(texts = texts).shape == (3, 4, 40)
    token_ids = torch.randint(1, 300, (3, 6))
    assert quantizer(texts = token_ids, namespace = 'semantic').shape == (3, 4, 16)

    # gradients reach the conditioning tables, never MuLaN
    quantizer(wavs = wavs, namespace = 'fine').sum().backward()
    assert quantizer.cond_embeddings['fine'].grad is not None
    assert all(p.grad is None for p in mulan.parameters())

    # nested config round-trip
    loaded = MuLaNEmbedQuantizer.init_and_load_from(quantizer.save(tmp_path / 'q.pt')).eval()
    assert torch.equal(loaded(wavs = wavs, namespace = 'coarse'), conds)

    with pytest.raises(ValueError, match = 'unknown namespace'):
        quantizer(wavs = wavs, namespace = 'acoustic')
    with pytest.raises(ValueError, match = 'exactly one'):
        quantizer(wavs = wavs, texts = texts)
    with pytest.raises(ValueError, match = 'one width per namespace'):
        MuLaNEmbedQuantizer(mulan = mulan, conditioning_dims = (8, 8))


# ---------------------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------------------

class PairedDataset(torch.utils.data.Dataset):
    def __init__(self, token_ids = False):
        self.wavs, self.texts = paired_set()
        self.token_ids = token_ids

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, index):
        text = self.texts[index]
        if self.token_ids:
            text = byte_tokenize([text], 64)[0]
        return self.wavs[index], text      # audio first: fields are routed by type, not position


def test_mulan_trainer_steps_and_checkpoints(tmp_path):
    from audiolm_pytorch import MuLaNTrainer
    from audiolm_pytorch.trainers.base import Batch
    from audiolm_pytorch.trainers.mulan import split_text_audio

    mulan = tiny_mulan()
    before = {k: v.clone() for k, v in mulan.state_dict().items()}
    trainer = MuLaNTrainer(mulan, PairedDataset(), num_train_steps = 3, batch_size = 2, save_model_every = 2,
                           save_results_every = 100, results_folder = tmp_path, valid_frac = 0.25,
                           progress_bar = False, force_clear_prev_results = True)
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob('mulan.*.pt')) == ['mulan.0.pt', 'mulan.2.pt']
    assert all(math.isfinite(v) for _, v in trainer.loss_history['loss'])
    assert any(not torch.equal(before[k], v) for k, v in mulan.state_dict().items())
    loaded = MuLaN.init_and_load_from(tmp_path / 'mulan.2.pt').eval()
    wavs, texts = paired_set(2)
    assert torch.allclose(loaded.get_text_latents(raw_texts = texts), mulan.eval().get_text_latents(raw_texts = texts),
                          atol = 1e-6)

    # token-id items are routed as texts
    ids = torch.randint(1, 257, (2, 5))
    routed_wavs, text_kwargs = split_text_audio(Batch((ids, wavs[:, None]), None))
    assert routed_wavs.shape == (2, 2048) and torch.equal(text_kwargs['texts'], ids)
    with pytest.raises(ValueError, match = 'one text per item'):
        split_text_audio(Batch((wavs,), None))
    with pytest.raises(ValueError, match = 'manifest'):
        MuLaNTrainer(tiny_mulan(), folder = tmp_path, num_train_steps = 1, batch_size = 1, results_folder = tmp_path)


def test_frozen_codebook_does_not_move():
    quantizer = MuLaNEmbedQuantizer(mulan = tiny_mulan(), conditioning_dims = 8, rq_num_quantizers = 2,
                                    codebook_size = 4).train()
    wavs, _ = paired_set()
    quantizer(wavs = wavs)                                      # k-means initialisation
    codebooks = {k: v.clone() for k, v in quantizer.rq.state_dict().items()}
    quantizer(wavs = wavs * 0.5)
    assert any(not torch.equal(codebooks[k], v) for k, v in quantizer.rq.state_dict().items())   # EMA update

    quantizer.freeze_codebook = True
    codebooks = {k: v.clone() for k, v in quantizer.rq.state_dict().items()}
    quantizer(wavs = wavs * 0.25)
    assert all(torch.equal(codebooks[k], v) for k, v in quantizer.rq.state_dict().items())


def test_mulan_trainer_token_ids_of_different_lengths(tmp_path):
    from audiolm_pytorch import MuLaNTrainer
    from audiolm_pytorch.data import collate_pad
    from audiolm_pytorch.trainers.base import Batch
    mulan = tiny_mulan()
    trainer = MuLaNTrainer(mulan, PairedDataset(), num_train_steps = 1, batch_size = 2, save_results_every = 100,
                           results_folder = tmp_path, progress_bar = False, force_clear_prev_results = True)
    wavs, texts = paired_set(2)
    short, long = byte_tokenize([texts[0]], 64)[0, :3], byte_tokenize([texts[1]], 64)[0, :6]
    ids, audio = collate_pad([(short, wavs[0]), (long, wavs[1])])
    assert ids[0, 3:].tolist() == [-1, -1, -1]                     # collate_pad's padding
    mulan.eval()
    loss, _ = trainer.compute_loss(mulan, Batch((ids, audio), None))
    padded = torch.stack([torch.cat((short, torch.zeros(3, dtype = torch.long))), long])   # the text pad id (0)
    assert torch.allclose(loss, mulan(audio, texts = padded))


def test_ast_2d_rotary_angles_survive_a_cast_to_bf16():
    from audiolm_pytorch.musiclm.ast import AxialRotary2D
    rotary = AxialRotary2D(dim_head = 32)
    rows, cols = torch.arange(40)[None], torch.arange(40)[None] * 7
    cos, sin = rotary(rows, cols)
    cos16, sin16 = rotary.to(torch.bfloat16)(rows, cols)
    assert torch.allclose(cos16.float(), cos, atol = 1e-5) and torch.allclose(sin16.float(), sin, atol = 1e-5)


def test_trainer_resumed_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    """Exact resume: steps 2-3 of a run loaded from its step-1 checkpoint give the same losses, weights and
    optimizer state as the run that never stopped (patch dropout and SpecAugment draw from the restored RNG, the
    data order continues). Checked against: ``load(restore_rng=False)`` in the resumed trainer fails on the losses."""
    from audiolm_pytorch import MuLaNTrainer

    def build(results):
        torch.manual_seed(0)
        return MuLaNTrainer(tiny_mulan(), PairedDataset(), num_train_steps = 4, batch_size = 2, lr = 1e-3,
                            save_model_every = 1, save_results_every = 100, valid_frac = 0.25, results_folder = results,
                            progress_bar = False, force_clear_prev_results = True)

    a = build(tmp_path / 'a')
    losses = [a.train_step()['loss'] for _ in range(4)]
    assert len(set(losses)) == 4
    b = build(tmp_path / 'b')
    b.load(tmp_path / 'a' / 'mulan.1.pt')
    assert b.steps == 2
    assert [b.train_step()['loss'] for _ in range(2)] == losses[2:]
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    for phase_a, phase_b in zip(a._phases, b._phases, strict = True):
        opt_a, opt_b = phase_a.optimizer.state_dict()['state'], phase_b.optimizer.state_dict()['state']
        assert opt_a.keys() == opt_b.keys() and opt_a
        assert all(torch.equal(opt_a[i][key], opt_b[i][key]) for i in opt_a for key in opt_a[i])


def test_text_vocabulary_defaults_to_the_reference_and_old_checkpoints_keep_theirs(tmp_path):
    """Default ``num_tokens`` is musiclm-pytorch's 49408; a MuLaN saved by versions <= 0.1.0 with the then default
    (20000, not named in its config) rebuilds that size. Checked against: dropping TextTransformer.legacy_defaults
    (the rebuilt text tower gets 49408 ids and the weights do not fit)."""
    import json

    from audiolm_pytorch.checkpoint import read_checkpoint
    text = TextTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8)
    assert text.num_tokens == 49408 and text.config['num_tokens'] == 49408
    torch.manual_seed(0)
    old = MuLaN(AudioSpectrogramTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, patch_size = 4),
                TextTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, num_tokens = 20000), dim_latent = 8)
    path = old.save(tmp_path / 'old.pt')
    pkg = torch.load(path, weights_only = True)
    config = json.loads(pkg['config'])
    del config['text_transformer']['config']['num_tokens']          # as versions <= 0.1.0 wrote the default
    pkg['config'] = json.dumps(config)
    torch.save(pkg, path)
    assert 'num_tokens' not in read_checkpoint(path)['config']['text_transformer']['config']
    rebuilt = MuLaN.init_and_load_from(path).eval()
    assert rebuilt.text.num_tokens == 20000
    ids = torch.randint(0, 20000, (2, 6))
    with torch.no_grad():
        assert torch.equal(rebuilt.get_text_latents(ids), old.eval().get_text_latents(ids))


# ---- bad audio and text, embed quantizer and MusicLM bad input -----------------------------------------------------

@pytest.fixture(scope = 'module')
def mulan():
    from audiolm_pytorch import AudioSpectrogramTransformer, MuLaN, TextTransformer
    torch.manual_seed(0)
    return MuLaN(AudioSpectrogramTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, patch_size = 4),
                 TextTransformer(dim = 16, depth = 1, heads = 2, dim_head = 8, max_seq_len = 8), dim_latent = 8)


@pytest.mark.parametrize('wavs, message', [
    (torch.full((2, 512), NAN), 'NaN'),                      # was a silent NaN loss
    (torch.randint(-3, 3, (2, 512)), 'floating-point'),      # was silently cast
    (torch.zeros(0, 512), 'empty batch'),                    # was a RuntimeError from the STFT
    (torch.zeros(2, 0), 'empty waveform'),
    (torch.zeros(1, 1, 2, 512), r'\(b, n\)'),
])
def test_mulan_rejects_bad_audio(mulan, wavs, message):
    with pytest.raises(ValueError, match = message):
        mulan(wavs, raw_texts = ['a', 'b'])


@pytest.mark.parametrize('texts, message', [
    (torch.ones(2, 20, dtype = torch.long), 'max_seq_len=8'),
    (torch.full((2, 4), 60000), r'\[0, 49408\)'),
    (torch.ones(2, 4), 'integer'),
    (torch.ones(0, 4, dtype = torch.long), 'empty batch'),
    ([], 'at least one text'),
])
def test_mulan_text_tower_rejects_bad_ids(mulan, texts, message):
    with pytest.raises(ValueError, match = message):
        mulan.get_text_latents(texts)


def test_mulan_embed_quantizer_and_musiclm_bad_input(mulan):
    from audiolm_pytorch import MuLaNEmbedQuantizer, MusicLM
    quantizer = MuLaNEmbedQuantizer(mulan, conditioning_dims = 16, rq_num_quantizers = 2, codebook_size = 4)
    with pytest.raises(ValueError, match = 'NaN'):
        quantizer(wavs = torch.full((2, 512), NAN), namespace = 'semantic')
    with pytest.raises(ValueError, match = 'namespace'):
        quantizer(texts = ['a'], namespace = 'acoustic')
    with pytest.raises(ValueError, match = 'exactly one'):
        quantizer(wavs = torch.randn(1, 512), texts = ['a'])

    def audio_lm(text, batch_size, **kwargs):   # the second candidate of each prompt is NaN
        waves = torch.randn(batch_size, 512) * 0.1
        waves[1::2] = NAN
        return waves

    musiclm = MusicLM(audio_lm, quantizer)
    with pytest.raises(ValueError, match = 'at least one text'):
        musiclm([])
    with pytest.raises(ValueError, match = 'num_samples'):
        musiclm(['a'], num_samples = 0)
    # a NaN candidate must not be ranked (argmax of NaN scores would pick it): MuLaN refuses to score it
    with pytest.raises(ValueError, match = 'NaN'):
        musiclm(['a'], num_samples = 2)
