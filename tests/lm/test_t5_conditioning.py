"""Text conditioning through a real (tiny, random) T5 encoder saved to a local directory: the path users take
with ``t5_name=<local dir>`` and ``text=[...]``, end to end, with no hub access.

The directory is what ``save_pretrained`` writes for a ``T5EncoderModel`` and a fast tokenizer, so this runs the
same ``transformers`` loading code as a downloaded ``google/t5-v1_1-base`` would.
"""

import pytest
import tokenizers
import torch
import transformers

from audiolm_pytorch.audiolm import AudioLM
from audiolm_pytorch.lm.coarse import CoarseTransformer, CoarseTransformerWrapper
from audiolm_pytorch.lm.fine import FineTransformer
from audiolm_pytorch.lm.semantic import SemanticTransformer, SemanticTransformerWrapper
from tests.helpers import StubCodec, StubSemanticTokenizer

TINY = dict(dim = 32, depth = 1, heads = 2, dim_head = 16)
T5_DIM = 24
WORDS = ['a', 'soft', 'loud', 'piano', 'voice', 'drums', 'slow', 'fast', 'song']


@pytest.fixture(scope = 'module')
def t5_dir(tmp_path_factory):
    """A 1-layer T5 encoder (d_model 24) and a word-level tokenizer, saved as a local T5 directory."""
    path = tmp_path_factory.mktemp('tiny_t5')
    vocab = {'<pad>': 0, '</s>': 1, '<unk>': 2, **{word: i + 3 for i, word in enumerate(WORDS)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token = '<unk>'))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    # T5 tokenizers end every text with </s>
    backend.post_processor = tokenizers.processors.TemplateProcessing(single = '$A </s>', special_tokens = [('</s>', 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object = backend, pad_token = '<pad>',
                                                     eos_token = '</s>', unk_token = '<unk>')
    tokenizer.save_pretrained(path)
    config = transformers.T5Config(vocab_size = len(vocab), d_model = T5_DIM, d_kv = 8, d_ff = 32, num_layers = 1,
                                   num_heads = 3, pad_token_id = 0, eos_token_id = 1, decoder_start_token_id = 0)
    torch.manual_seed(0)
    transformers.T5EncoderModel(config).eval().save_pretrained(path)
    return str(path)


def reference_embeds(t5_dir, texts):
    """What the encoder gives for ``texts`` when called directly (padding positions zeroed)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(t5_dir, local_files_only = True)
    encoder = transformers.T5EncoderModel.from_pretrained(t5_dir, local_files_only = True).eval()
    batch = tokenizer(texts, return_tensors = 'pt', padding = 'longest')
    with torch.no_grad():
        embeds = encoder(input_ids = batch.input_ids, attention_mask = batch.attention_mask).last_hidden_state
    mask = batch.attention_mask.bool()
    return embeds.masked_fill(~mask[..., None], 0.), mask


def test_local_t5_is_loaded_lazily_and_embeds_like_transformers(t5_dir):
    model = SemanticTransformer(num_semantic_tokens = 12, has_condition = True, t5_name = t5_dir, **TINY)
    assert model.decoder.cond_dim == T5_DIM               # read from the directory's config.json, not the hub
    assert getattr(model.decoder, '_t5', None) is None    # nothing loaded at construction
    assert all('t5' not in name.lower() for name in model.state_dict())   # T5 stays out of checkpoints

    texts = ['soft piano song', 'loud drums']
    embeds, mask = model.decoder.embed_text(texts)
    expected, expected_mask = reference_embeds(t5_dir, texts)
    assert torch.equal(model.embed_text(texts), embeds)
    assert mask.tolist() == expected_mask.tolist() == [[True] * 4, [True] * 3 + [False]]
    assert torch.allclose(embeds, expected, atol = 1e-6)


def test_text_and_text_embeds_give_the_same_training_loss_and_generation(t5_dir):
    torch.manual_seed(1)
    model = SemanticTransformer(num_semantic_tokens = 12, has_condition = True, t5_name = t5_dir,
                                cond_drop_prob = 0., **TINY)
    wrapper = SemanticTransformerWrapper(transformer = model, mask_prob = 0.)
    texts = ['soft piano', 'fast voice']                  # same length: no padding in the reference embeds
    embeds, _ = reference_embeds(t5_dir, texts)
    ids = torch.randint(0, 12, (2, 9))

    wrapper.eval()
    loss_text = wrapper(semantic_token_ids = ids, text = texts, return_loss = True)
    loss_embeds = wrapper(semantic_token_ids = ids, text_embeds = embeds, return_loss = True)
    assert torch.allclose(loss_text, loss_embeds, atol = 1e-6)

    wrapper.train()
    wrapper(semantic_token_ids = ids, text = texts, return_loss = True).backward()
    assert model.decoder.proj_cond.weight.grad.abs().sum() > 0    # the text condition reaches the loss

    torch.manual_seed(2)
    from_text = wrapper.generate(max_length = 8, text = texts, cond_scale = 2.)
    torch.manual_seed(2)
    from_embeds = wrapper.generate(max_length = 8, text_embeds = embeds, cond_scale = 2.)
    assert from_text.tolist() == from_embeds.tolist()

    with torch.no_grad():
        logits = model(ids = ids, text = texts)
        guided = model.forward_with_cond_scale(ids = ids, text = texts, cond_scale = 3.)
        assert torch.allclose(model.forward_with_cond_scale(ids = ids, text = texts, cond_scale = 1.), logits, atol = 1e-6)
        assert not torch.allclose(guided, logits, atol = 1e-4)


def test_coarse_stage_takes_text(t5_dir):
    torch.manual_seed(0)
    coarse = CoarseTransformer(num_semantic_tokens = 12, codebook_size = 16, num_coarse_quantizers = 2,
                               has_condition = True, t5_name = t5_dir, **TINY)
    wrapper = CoarseTransformerWrapper(transformer = coarse, codec = StubCodec(num_quantizers = 4))
    semantic = torch.randint(0, 12, (2, 6))
    coarse_ids = torch.randint(0, 16, (2, 6, 2))
    loss = wrapper(semantic_token_ids = semantic, coarse_token_ids = coarse_ids, text = ['slow song', 'a voice'],
                   return_loss = True)
    assert torch.isfinite(loss)


def test_audiolm_generates_from_text_with_a_local_t5(t5_dir):
    torch.manual_seed(0)
    codec, wav2vec = StubCodec(num_quantizers = 4), StubSemanticTokenizer()
    cond = dict(has_condition = True, t5_name = t5_dir)
    audiolm = AudioLM(
        wav2vec = wav2vec, codec = codec,
        semantic_transformer = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **cond, **TINY),
        coarse_transformer = CoarseTransformer(num_semantic_tokens = wav2vec.codebook_size,
                                               codebook_size = codec.codebook_size, num_coarse_quantizers = 2,
                                               **cond, **TINY),
        fine_transformer = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2,
                                           codebook_size = codec.codebook_size, **cond, **TINY))
    out = audiolm(text = ['soft piano song', 'loud drums'], max_length = 6, max_coarse_time_steps = 4)
    waves = out if isinstance(out, list) else list(out)
    assert len(waves) == 2
    for wave in waves:
        assert wave.ndim == 1 and wave.shape[-1] % codec.downsample_factor == 0 and torch.isfinite(wave).all()

    with pytest.raises(ValueError, match = 'cond_dim'):   # a T5 of another width than the stages were built for
        SemanticTransformer(num_semantic_tokens = 12, has_condition = True, t5_name = t5_dir, cond_dim = 16,
                            **TINY).embed_text(['piano'])
