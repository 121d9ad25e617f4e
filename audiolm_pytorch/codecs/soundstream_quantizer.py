"""Construction of SoundStream's residual quantizer (vector-quantize-pytorch's RVQ / grouped RVQ / residual LFQ /
residual FSQ) and the guard that keeps its k-means initialisation out of eval-mode passes.

``ResidualQuantizerMixin`` holds these parts of ``SoundStream`` (``soundstream.py``, which quantizes in
``quantize``); the per-example quantizer dropout and the relative dead-code threshold are in
``quantizer_training.py``.
"""

from __future__ import annotations

from contextlib import contextmanager

from torch import Tensor, nn


class ResidualQuantizerMixin:
    """Uses ``quantizer_kind`` (``'vq' | 'lfq' | 'fsq'``), ``dead_code_threshold`` and ``rq`` set by the model."""

    def _build_quantizer(self, dim, codebook_size, num_quantizers, groups, commitment_weight, ema_decay,
                         dropout_multiple_of, cutoff, fsq_levels, rq_kwargs) -> nn.Module:
        from vector_quantize_pytorch import (GroupedResidualFSQ, GroupedResidualLFQ, GroupedResidualVQ, ResidualFSQ,
                                             ResidualLFQ, ResidualVQ)
        common = dict(num_quantizers = num_quantizers, quantize_dropout = True,
                      quantize_dropout_cutoff_index = cutoff, quantize_dropout_multiple_of = dropout_multiple_of)
        if self.quantizer_kind == 'lfq':
            kwargs = dict(common, codebook_size = codebook_size, **rq_kwargs)
            single, grouped = ResidualLFQ, GroupedResidualLFQ
        elif self.quantizer_kind == 'fsq':
            kwargs = dict(common, levels = list(fsq_levels), **rq_kwargs)
            single, grouped = ResidualFSQ, GroupedResidualFSQ
        else:
            # a relative threshold is set before every training forward (quantizer_training.py); the absolute
            # 2 of earlier versions is kept when rq_dead_code_threshold=None
            threshold = 2 if self.dead_code_threshold is None else (1. if self.dead_code_threshold > 0 else 0)
            kwargs = dict(common, codebook_size = codebook_size, decay = ema_decay, commitment_weight = commitment_weight,
                          kmeans_init = True, threshold_ema_dead_code = threshold)
            kwargs.update(rq_kwargs)
            single, grouped = ResidualVQ, GroupedResidualVQ
        if groups == 1:
            return single(dim = dim, **kwargs)
        return grouped(dim = dim, groups = groups, **kwargs)

    @contextmanager
    def _codebooks_frozen_in_eval(self):
        """vector-quantize-pytorch k-means-initialises a codebook on its first forward, in eval mode too. A level
        that training never reached (quantizer dropout) would then be set from whatever is tokenized first, so
        the same checkpoint would give different codes in different processes. In eval (of the quantizer: ``tokenize``
        and ``encode_chunk`` put it in eval even while the model trains), such levels quantize
        against their stored (untrained) codebook and stay uninitialised for later training."""
        pending = [] if self.rq.training else [m.initted for m in self.rq.modules()
                                             if isinstance(getattr(m, 'initted', None), Tensor) and not m.initted]
        for flag in pending:
            flag.fill_(True)
        try:
            yield
        finally:
            for flag in pending:
                flag.fill_(False)
