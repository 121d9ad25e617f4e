"""Share vector-quantizer codebook statistics across training processes.

vector-quantize-pytorch decides whether a codebook all-reduces its k-means initialisation, EMA statistics and
dead-code samples (``sync_codebook``) once, when the quantizer is built, from a process-wide cached
``is_distributed()``. A codec built before the process group exists — the usual order: build the model, then
hand it to a trainer that creates the ``Accelerator`` — therefore never syncs. Under DDP the buffer broadcast
hides that (every rank copies rank 0's codebooks, discarding the statistics of the others); under FSDP,
which broadcasts no buffers, the replicas' codebooks drift apart.

``enable_codebook_sync(codec)`` switches syncing on after the fact, once ``torch.distributed`` is initialised
with more than one process; ``SoundStreamTrainer`` calls it. Quantizers built with an explicit
``sync_codebook`` (through ``rq_kwargs``) are left as they are.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import nn

# attributes that vector-quantize-pytorch's EuclideanCodebook / CosineSimCodebook read at every forward
_REQUIRED = ('use_ddp', 'all_reduce_fn', 'kmeans_all_reduce_fn', 'sample_fn', 'replace_sample_fn')


def codebooks(module: nn.Module) -> list[nn.Module]:
    """The vector-quantize-pytorch codebooks inside ``module`` (EMA / k-means ones; LFQ and FSQ have none)."""
    return [m for m in module.modules() if all(hasattr(m, name) for name in _REQUIRED)]


def enable_codebook_sync(module: nn.Module) -> int:
    """All-reduce the codebook statistics of every codebook in ``module`` across processes. Returns how many
    codebooks were switched on (0 without a multi-process group, or when the codec's config fixed
    ``sync_codebook`` itself). Call it on every rank, before the first training forward."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return 0
    rq_kwargs = (getattr(module, 'config', None) or {}).get('rq_kwargs') or {}
    if 'sync_codebook' in rq_kwargs:
        return 0
    from vector_quantize_pytorch.vector_quantize_pytorch import sample_vectors_distributed

    switched = 0
    for codebook in codebooks(module):
        if codebook.use_ddp:
            continue
        codebook.use_ddp = True
        codebook.all_reduce_fn = dist.all_reduce
        # vector-quantize-pytorch cannot k-means-initialise several codebooks per quantizer across processes
        initted = getattr(codebook, 'initted', None)
        kmeans_pending = initted is not None and not bool(initted.all())
        if not (getattr(codebook, 'num_codebooks', 1) > 1 and kmeans_pending):
            codebook.kmeans_all_reduce_fn = dist.all_reduce
            codebook.sample_fn = codebook.replace_sample_fn = sample_vectors_distributed
        switched += 1
    return switched
