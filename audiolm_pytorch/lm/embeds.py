"""``get_embeds``: embedding lookup that tolerates a padding id outside the vocabulary (established helper)."""

from __future__ import annotations

from einops import rearrange
from torch import Tensor, nn

from audiolm_pytorch.utils import beartype, exists


@beartype
def get_embeds(embeddings: nn.Embedding, codes: Tensor, pad_id: int = -1, return_mask: bool = False,
               mask_pad_pos_to: float | None = 0):
    """Embed ``codes (...)`` with ``embeddings`` -> ``(..., dim)``, where positions holding ``pad_id`` (which may
    lie outside the table, e.g. -1) are looked up as id 0 and then filled with ``mask_pad_pos_to`` (left as
    id 0's embedding when None). With ``return_mask=True`` also returns the ``(...)`` bool mask, True = real code.
    """
    pad_mask = codes == pad_id
    embeds = embeddings(codes.masked_fill(pad_mask, 0))
    if exists(mask_pad_pos_to):
        embeds = embeds.masked_fill(rearrange(pad_mask, '... -> ... 1'), mask_pad_pos_to)
    if return_mask:
        return embeds, ~pad_mask
    return embeds
