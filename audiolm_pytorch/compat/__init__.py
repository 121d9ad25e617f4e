"""Compatibility with scripts written for audiolm-pytorch 2.4.0, soundstorm-pytorch 0.6.1 and musiclm-pytorch 0.2.8.

One table per class (``codec.py``, ``lm.py``, ``trainers.py``, ``soundstorm.py``, ``musiclm.py``) says what
happens to every reference keyword our signatures do not take as is; ``core.py`` applies them. ``MIGRATION.md`` at
the repository root is generated from these tables (``scripts/make_migration.py``).
"""

from audiolm_pytorch.compat.core import (LegacyKeywordError, LegacyKeywordWarning, reference_compat, reset_warnings,
                                         table_for)

__all__ = ['LegacyKeywordError', 'LegacyKeywordWarning', 'reference_compat', 'reset_warnings', 'table_for']
