"""SoundStorm (Borsos et al., arXiv 2305.09636): parallel, level-by-level masked generation of RVQ codes.

``ConformerWrapper`` (``wrapper.py``) turns a frame of residual codes into one Conformer input vector and predicts
every level with its own output head. ``SoundStorm`` (``model.py``) trains it with the paper's masking scheme
(§3.2, ``masking.py``) and decodes MaskGIT-style (arXiv 2202.04200), level by level (``decoding.py``),
conditioned on semantic tokens aligned to the codec frames (§3.1, ``alignment.py``) and optionally on an acoustic
prompt. ``SemanticToAudio`` (``pipeline.py``) chains a semantic transformer, SoundStorm and the codec (the AudioLM
pipeline with SoundStorm replacing the coarse and fine stages).

Code layout: codes are ``(b, n, g·q)`` in the codec's group-major order (``'b n (g q)'``), ``q`` residual
levels per group. A *level* is one residual depth across all groups; levels are decoded coarse to fine.
"""

from audiolm_pytorch.lm.sampling import gumbel_noise, top_k_filter
from audiolm_pytorch.nn.conformer import Conformer
from audiolm_pytorch.soundstorm.masking import SCHEDULES, cosine_schedule, linear_schedule
from audiolm_pytorch.soundstorm.model import SoundStorm, SoundStormLoss
from audiolm_pytorch.soundstorm.pipeline import SemanticToAudio
from audiolm_pytorch.soundstorm.wrapper import ConformerWrapper

# gumbel_noise / top_k_filter (the one sampler, lm/sampling.py) and Conformer (nn/conformer.py) were importable
# from the former soundstorm.py module and stay so
__all__ = ['SoundStorm', 'SoundStormLoss', 'ConformerWrapper', 'Conformer', 'SemanticToAudio', 'SCHEDULES',
           'cosine_schedule', 'linear_schedule', 'gumbel_noise', 'top_k_filter']
