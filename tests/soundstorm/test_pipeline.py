"""SemanticToAudio: rates, EOS and lengths taken from the semantic transformer, prime waves."""
import torch

from audiolm_pytorch.soundstorm_pipeline import SemanticToAudio
from tests.helpers import STORM_CODEC, StubCodec, StubSemantic, tiny_soundstorm


class SemanticWrapperStub:
    """Semantic transformer stand-in with a 25 Hz tokenizer attached (as SemanticTransformerWrapper has)."""

    eos_id, pad_id = 10, -1

    def __init__(self, wav2vec = None, lengths = (8, 5)):
        self.wav2vec, self.lengths = wav2vec, lengths

    def generate(self, *, max_length, batch_size, **kwargs):
        ids = torch.randint(0, 10, (batch_size, max_length))
        for i, length in enumerate(self.lengths[:batch_size]):
            if length < max_length:
                ids[i, length] = self.eos_id
                ids[i, length + 1:] = self.pad_id
        return ids


def test_pipeline_takes_the_semantic_rate_from_the_semantic_transformer():
    # bug: SoundStorm built with num_semantic_token_ids (no wav2vec / rates) generated one codec frame per
    # semantic token, so 25 Hz semantic tokens over a 50 Hz codec gave audio of half the duration
    torch.manual_seed(0)
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), num_semantic_token_ids = 10)
    pipeline = SemanticToAudio(semantic_transformer = SemanticWrapperStub(StubSemantic()), soundstorm = model)
    waves = pipeline(batch_size = 2, max_length = 8, steps = 2)
    # 8 tokens at 25 Hz = 0.32 s = 16 frames = 256 samples; 5 tokens -> 10 frames -> 160 samples
    assert isinstance(waves, list) and [w.shape[-1] for w in waves] == [256, 160]


def test_pipeline_ends_the_sequence_at_the_semantic_transformers_eos():
    # bug: an EOS id inside SoundStorm's semantic vocabulary was taken for a real token
    torch.manual_seed(0)
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), wav2vec = StubSemantic(), num_semantic_token_ids = 12)
    pipeline = SemanticToAudio(semantic_transformer = SemanticWrapperStub(), soundstorm = model)
    waves = pipeline(batch_size = 2, max_length = 8, steps = 2)
    assert isinstance(waves, list) and [w.shape[-1] for w in waves] == [256, 160]


def test_pipeline_alignment_respects_an_asked_length():
    torch.manual_seed(0)
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), num_semantic_token_ids = 10)
    pipeline = SemanticToAudio(semantic_transformer = SemanticWrapperStub(StubSemantic(), lengths = (8, 8)),
                               soundstorm = model)
    codes = pipeline(batch_size = 2, max_length = 8, steps = 2, num_latents = 20, return_codes = True)
    # 8 tokens at 25 Hz cover 16 codec frames; the 4 asked for past them are padding
    assert isinstance(codes, torch.Tensor) and codes.shape == (2, 20, 3)
    assert (codes[:, 16:] == model.pad_id).all() and (codes[:, :16] >= 0).all()


def test_pipeline_prime_wave_with_rates_from_the_semantic_transformer():
    from audiolm_pytorch import SemanticTransformer, SemanticTransformerWrapper
    torch.manual_seed(0)
    semantic = SemanticTransformerWrapper(
        transformer = SemanticTransformer(num_semantic_tokens = 10, dim = 16, depth = 1, heads = 2, dim_head = 8),
        wav2vec = StubSemantic(), unique_consecutive = False)
    model = tiny_soundstorm(soundstream = StubCodec(**STORM_CODEC), num_semantic_token_ids = 10)
    pipeline = SemanticToAudio(semantic_transformer = semantic, soundstorm = model)
    prime = torch.rand(1, 128)                       # 4 semantic tokens (25 Hz), 8 codec frames (50 Hz)
    out = pipeline(max_length = 10, prime_wave = prime, steps = 2, return_codes = True,
                   semantic_generate_kwargs = dict(cond_scale = 1., min_new_tokens = 6))
    assert out.shape == (1, 20, 3)                   # 10 semantic tokens -> 20 codec frames
    assert torch.equal(out[0, :8], model.tokenize(prime)[0])
