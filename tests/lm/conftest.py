"""Fixtures shared by the LM stage tests."""

import pytest
import torch

from tests.helpers import StubCodec, StubSemanticTokenizer

TINY_LM = dict(dim = 16, depth = 1, heads = 2, dim_head = 8)


@pytest.fixture(scope = 'module')
def wrappers():
    from audiolm_pytorch import (
        CoarseTransformer,
        CoarseTransformerWrapper,
        FineTransformer,
        FineTransformerWrapper,
        SemanticTransformer,
        SemanticTransformerWrapper,
    )
    torch.manual_seed(0)
    wav2vec, codec = StubSemanticTokenizer(codebook_size = 10), StubCodec(codebook_size = 8, num_quantizers = 4)
    semantic = SemanticTransformerWrapper(transformer = SemanticTransformer(num_semantic_tokens = 10, **TINY_LM),
                                          wav2vec = wav2vec)
    coarse = CoarseTransformerWrapper(transformer = CoarseTransformer(num_semantic_tokens = 10, codebook_size = 8,
                                                                      num_coarse_quantizers = 2, **TINY_LM),
                                      codec = codec, wav2vec = wav2vec)
    fine = FineTransformerWrapper(transformer = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2,
                                                                codebook_size = 8, **TINY_LM), codec = codec)
    return dict(semantic = semantic, coarse = coarse, fine = fine)
