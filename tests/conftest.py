import random

import numpy as np
import pytest
import torch

ASSETS = __import__('pathlib').Path(__file__).parent / 'assets'


@pytest.fixture(autouse = True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def assets_dir():
    return ASSETS
