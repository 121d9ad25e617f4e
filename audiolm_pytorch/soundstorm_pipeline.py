"""Former home of ``SemanticToAudio``, now ``audiolm_pytorch.soundstorm.pipeline``; kept so that
``from audiolm_pytorch.soundstorm_pipeline import SemanticToAudio`` keeps working."""

from audiolm_pytorch.soundstorm.pipeline import SemanticToAudio

__all__ = ['SemanticToAudio']
