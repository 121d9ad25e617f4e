"""Fixtures for every test folder.

``tests/`` and each of its folders are packages (``__init__.py``): pytest's default import mode then puts the
repository root on ``sys.path`` and imports test modules as ``tests.<folder>.<module>``, so every test (and every
subprocess a test starts with the repository root on ``PYTHONPATH``) imports the shared tiny models and stand-ins
the same way: ``from tests.helpers import tiny_soundstream, StubCodec, ...``. Builders stay plain functions there
(tests call them with different sizes, subprocess scripts call them too); the fixtures below are what every test
gets.
"""

import random

import numpy as np
import pytest
import torch

from tests.helpers import ASSETS


@pytest.fixture(autouse = True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def assets_dir():
    return ASSETS
