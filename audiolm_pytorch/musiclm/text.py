"""Text tower of MuLaN: token ids or raw strings -> CLS-pooled embedding.

Raw strings are tokenized with a ``transformers`` tokenizer read from a local directory (never the hub), or,
when none is given, with a built-in byte-level tokenizer (UTF-8 bytes shifted by one, 0 = padding) so the model
works offline with no files at all.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor, nn

from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.nn.transformer import Transformer
from audiolm_pytorch.utils import beartype, exists

BYTE_VOCAB_SIZE = 257   # 0 = padding, 1..256 = UTF-8 byte value + 1


def byte_tokenize(texts: list[str], max_seq_len: int, pad_id: int = 0) -> Tensor:
    """UTF-8 bytes + 1, right-padded with ``pad_id`` and truncated to ``max_seq_len`` -> ``(b, n)`` long."""
    encoded = [list(text.encode('utf-8'))[:max_seq_len] for text in texts]
    length = max(1, max((len(e) for e in encoded), default = 1))
    ids = torch.full((len(texts), length), pad_id, dtype = torch.long, device = 'cpu')   # moved by the caller
    for row, values in enumerate(encoded):
        if values:
            ids[row, :len(values)] = torch.tensor(values, dtype = torch.long, device = 'cpu') + 1
    return ids


@reference_compat('TextTransformer')
class TextTransformer(Checkpointable, nn.Module):
    """Text tower of MuLaN.

    Args:
        dim, depth, heads, dim_head: encoder size.
        num_tokens: vocabulary size of the token ids. The default (49408, the size of the CLIP BPE vocabulary
            musiclm-pytorch's text tower uses) covers ids ``[0, 49408)`` and the built-in byte tokenizer (257 ids);
            a local tokenizer's vocabulary must fit too. Versions <= 0.1.0 defaulted to 20000 (their checkpoints
            rebuild that size).
        max_seq_len: longest token sequence (raw texts are truncated to it, longer id tensors are refused).
        pad_id: id of padding in token-id inputs (masked out of attention).
        tokenizer_path: local directory of a ``transformers`` tokenizer for raw texts (loaded lazily with
            ``local_files_only=True``); ``None`` uses the byte-level tokenizer.
        attn_dropout, ff_dropout, ff_mult, qk_norm: encoder options.

    ``forward(x (b, n) long | None, raw_texts=None list[str]) -> (b, dim)`` (the CLS token's output).
    """

    # checkpoints of versions <= 0.1.0 were written with a 20000-id vocabulary by default
    legacy_defaults = dict(num_tokens = 20000)

    @beartype
    def __init__(
        self, *, dim: int, depth: int, heads: int = 8, dim_head: int = 64, num_tokens: int = 49408,
        max_seq_len: int = 256, pad_id: int = 0, tokenizer_path: str | None = None, attn_dropout: float = 0.,
        ff_dropout: float = 0., ff_mult: float = 4., qk_norm: bool = False,
    ):
        super().__init__()
        if not exists(tokenizer_path) and num_tokens < BYTE_VOCAB_SIZE:
            raise ValueError(f'num_tokens={num_tokens} is too small for the built-in byte tokenizer '
                             f'(needs {BYTE_VOCAB_SIZE}); raise it or pass tokenizer_path')
        self.dim, self.num_tokens, self.max_seq_len, self.pad_id = dim, num_tokens, max_seq_len, pad_id
        self.tokenizer_path = tokenizer_path
        self._tokenizer = None   # loaded on first use; never part of the state dict

        self.token_emb = nn.Embedding(num_tokens, dim)
        self.cls_token = nn.Parameter(torch.randn(dim) * 0.02)
        self.encoder = Transformer(dim = dim, depth = depth, heads = heads, dim_head = dim_head, ff_mult = ff_mult,
                                   attn_dropout = attn_dropout, ff_dropout = ff_dropout, causal = False,
                                   rotary = True, qk_norm = qk_norm)

    @property
    def device(self) -> torch.device:
        return self.cls_token.device

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path, local_files_only = True)
            except (OSError, ValueError) as error:
                raise ValueError(f'cannot load a tokenizer from the local path {self.tokenizer_path!r} ({error}); '
                                 'pass a directory holding tokenizer files, or tokenizer_path=None for bytes') from error
            if len(tokenizer) > self.num_tokens:
                raise ValueError(f'tokenizer at {self.tokenizer_path!r} has {len(tokenizer)} ids but num_tokens is '
                                 f'{self.num_tokens}; construct TextTransformer with num_tokens >= {len(tokenizer)}')
            self._tokenizer = tokenizer
        return self._tokenizer

    @beartype
    def tokenize(self, texts: list[str] | str) -> tuple[Tensor, Tensor]:
        """Raw strings -> ``(ids (b, n) long, mask (b, n) bool True = token)`` on the model's device."""
        texts = [texts] if isinstance(texts, str) else texts
        if len(texts) == 0:
            raise ValueError('tokenize needs at least one text')
        if exists(self.tokenizer_path):
            batch = self._load_tokenizer()(texts, padding = True, truncation = True, max_length = self.max_seq_len,
                                           return_tensors = 'pt')
            ids, mask = batch['input_ids'], batch['attention_mask'].bool()
        else:
            ids = byte_tokenize(texts, self.max_seq_len, pad_id = self.pad_id)
            mask = ids != self.pad_id
        return ids.to(self.device), mask.to(self.device)

    @beartype
    def forward(self, x: Tensor | None = None, raw_texts: list[str] | str | None = None,
                mask: Tensor | None = None, return_all_layers: bool = False):
        """Args:
            x: token ids ``(b, n)`` in ``[0, num_tokens)``; ``pad_id`` marks padding unless ``mask`` is given.
            raw_texts: strings to tokenize instead of ``x``.
            mask: optional ``(b, n)`` bool, True = real token.
            return_all_layers: also return every layer's output but the last's, ``(depth - 1, b, 1 + n, dim)``
                (CLS first).

        Returns: ``(b, dim)`` output at the CLS position (and the layers).
        """
        if exists(x) == exists(raw_texts):
            raise ValueError('pass exactly one of token ids (x / texts) or raw_texts')
        if exists(raw_texts):
            x, mask = self.tokenize(raw_texts)
        if x.ndim != 2 or x.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
            raise ValueError(f'token ids must be an integer tensor (b, n), got {x.dtype} {tuple(x.shape)}')
        if x.shape[0] == 0:
            raise ValueError(f'token ids are an empty batch (shape {tuple(x.shape)}): pass at least one text')
        if x.shape[-1] > self.max_seq_len:
            raise ValueError(f'{x.shape[-1]} tokens exceed max_seq_len={self.max_seq_len}; truncate the ids '
                             'or construct TextTransformer with a larger max_seq_len')
        if x.numel() > 0 and (x.min() < 0 or x.max() >= self.num_tokens):
            raise ValueError(f'token ids must lie in [0, {self.num_tokens}), got [{x.min().item()}, {x.max().item()}]')

        mask = mask.bool() if exists(mask) else x != self.pad_id
        batch = x.shape[0]
        tokens = self.token_emb(x.long())
        cls = repeat(self.cls_token, 'd -> b 1 d', b = batch).to(tokens.dtype)
        tokens = torch.cat((cls, tokens), dim = 1)                                   # (b, 1 + n, d)
        mask = torch.cat((torch.ones(batch, 1, dtype = torch.bool, device = mask.device), mask), dim = 1)

        if return_all_layers:
            tokens, layers = self.encoder(tokens, mask = mask, return_all_layers = True)
            return tokens[:, 0], layers
        tokens = self.encoder(tokens, mask = mask)
        return tokens[:, 0]
