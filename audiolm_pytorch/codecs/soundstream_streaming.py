"""Chunk-by-chunk encoding and decoding of SoundStream with an explicit state.

Every layer of the codec is causal, so ``init_encoder_state`` / ``encode_chunk`` and ``init_decoder_state`` /
``decode_chunk`` give the same codes and audio as a whole-signal ``tokenize`` / ``decode_from_codebook_indices``.
``StreamingCodecMixin`` holds these methods; ``SoundStream`` (``soundstream.py``) inherits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from audiolm_pytorch.utils import eval_mode, exists


@dataclass
class CodecStreamState:
    """Streaming state of the encoder or the decoder: per-conv-layer buffers, attention kv caches, frames done."""
    conv: list
    attn: Any
    frames: int = 0


def _check_stream_batch(state: CodecStreamState, batch: int, method: str, init: str):
    """A streaming state holds per-row buffers: a chunk must have the batch size the state was made for."""
    buffers = [t for t in state.conv if isinstance(t, Tensor)] if isinstance(state, CodecStreamState) else None
    if buffers is None:
        raise ValueError(f'{method} needs the state from {init}() (or from the previous call), got {type(state).__name__}')
    if buffers and buffers[0].shape[0] != batch:
        raise ValueError(f'{method}: the chunk has batch size {batch} but the state was made for '
                         f'{buffers[0].shape[0]}: call {init}(batch_size={batch})')


class StreamingCodecMixin:
    """Streaming methods of ``SoundStream``. Uses its ``encoder`` / ``decoder`` (``StreamingSequential``),
    ``encoder_attn`` / ``decoder_attn`` (``LocalTransformer`` or None), ``rq``, ``process_input``, ``quantize``,
    ``codes_to_latents`` and ``_first_levels``."""

    def init_encoder_state(self, batch_size: int = 1) -> CodecStreamState:
        device, dtype = self.device, next(self.parameters()).dtype
        attn = self.encoder_attn.init_state(batch_size) if exists(self.encoder_attn) else None
        return CodecStreamState(conv = self.encoder.init_state(batch_size, device, dtype), attn = attn)

    def init_decoder_state(self, batch_size: int = 1) -> CodecStreamState:
        device, dtype = self.device, next(self.parameters()).dtype
        attn = self.decoder_attn.init_state(batch_size) if exists(self.decoder_attn) else None
        return CodecStreamState(conv = self.decoder.init_state(batch_size, device, dtype), attn = attn)

    @torch.no_grad()
    def encode_chunk(self, audio: Tensor, state: CodecStreamState, num_quantizers: int | None = None
                     ) -> tuple[Tensor, CodecStreamState]:
        """Encode the next chunk ``(b, n)`` / ``(b, c, n)`` (``n`` a multiple of ``downsample_factor``) ->
        ``(codes (b, n // hop, g * k), new_state)``. Concatenated chunk codes equal ``tokenize`` of the whole."""
        x = self.process_input(audio, curtail = False)
        _check_stream_batch(state, x.shape[0], 'encode_chunk', 'init_encoder_state')
        if x.shape[-1] == 0:   # an empty chunk: no codes, state unchanged
            empty = x.new_zeros(x.shape[0], 0, self.rq_groups * self.num_quantizers, dtype = torch.long)
            return self._first_levels(empty, num_quantizers), state
        if x.shape[-1] % self.downsample_factor:
            raise ValueError(f'streaming chunks must hold whole frames: {x.shape[-1]} samples is not a multiple of '
                             f'{self.downsample_factor}')
        h, conv_state = self.encoder.forward_stream(x, state.conv)
        latents, attn_state = rearrange(h, 'b d n -> b n d'), state.attn
        if exists(self.encoder_attn):
            latents, attn_state = self.encoder_attn.forward_stream(latents, attn_state)
        with eval_mode(self.rq):
            codes = self.quantize(latents)[1]
        new_state = CodecStreamState(conv = conv_state, attn = attn_state, frames = state.frames + latents.shape[1])
        return self._first_levels(codes, num_quantizers), new_state

    @torch.no_grad()
    def decode_chunk(self, codes: Tensor, state: CodecStreamState) -> tuple[Tensor, CodecStreamState]:
        """Decode the next codes chunk ``(b, frames, g * k)`` -> ``(audio (b, c, frames * hop), new_state)``."""
        latents, attn_state = self.codes_to_latents(codes), state.attn
        _check_stream_batch(state, latents.shape[0], 'decode_chunk', 'init_decoder_state')
        if latents.shape[1] == 0:   # an empty chunk: no audio, state unchanged
            return latents.new_zeros(latents.shape[0], self.input_channels, 0), state
        if exists(self.decoder_attn):
            latents, attn_state = self.decoder_attn.forward_stream(latents, attn_state)
        audio, conv_state = self.decoder.forward_stream(rearrange(latents, 'b n d -> b d n'), state.conv)
        return audio, CodecStreamState(conv = conv_state, attn = attn_state, frames = state.frames + latents.shape[1])

    def stream_tokenize(self, chunks, num_quantizers: int | None = None):
        """Generator: yields the codes of each audio chunk in turn (see ``encode_chunk``)."""
        state = None
        for chunk in chunks:
            if state is None:
                batch = 1 if chunk.ndim == 1 else chunk.shape[0]
                state = self.init_encoder_state(batch)
            codes, state = self.encode_chunk(chunk, state, num_quantizers)
            yield codes