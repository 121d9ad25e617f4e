"""Reading k-means centroids from the files users hold (``KMeans.from_file`` / ``load_kmeans_centroids``).

Formats read by ``load_kmeans_centroids`` / ``KMeans.from_file``:

- ``.safetensors`` (what ``fit_kmeans`` / ``KMeans.save`` write: tensor ``centroids`` (k, d), config in metadata),
- ``.npy`` (a plain ``(k, d)`` array; never unpickled), ``.pt`` / ``.pth`` (a tensor or a dict with
  ``centroids`` / ``cluster_centers_``, read with ``torch.load(weights_only=True)``),
- joblib / pickle dumps of scikit-learn ``KMeans`` / ``MiniBatchKMeans`` (``hubert_base_ls960_L9_km500.bin``,
  as written by fairseq's ``learn_kmeans.py``). These files are pickles, and unpickling a pickle runs whatever
  code the file names. By default they are read by a *restricted* unpickler that reconstructs only numpy
  arrays, dtypes, numpy scalars and an inert stand-in for the scikit-learn estimator, then takes its
  ``cluster_centers_``: no code from the file runs and neither scikit-learn nor joblib is needed. Files it
  cannot read (compressed dumps, other estimators) can be loaded with ``allow_pickle=True``, which calls
  ``joblib.load`` (needs ``pip install audiolm-pytorch[kmeans]``) and therefore executes the pickle: only do
  that for files you trust.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from audiolm_pytorch.utils import beartype, exists

__all__ = ['KMeansFileError', 'load_kmeans_centroids', 'read_sklearn_kmeans_pickle', 'PICKLE_SUFFIXES',
           'KMEANS_FORMAT']

PICKLE_SUFFIXES = ('.bin', '.joblib', '.pkl', '.pickle')
KMEANS_FORMAT = 'audiolm_pytorch.kmeans'


class KMeansFileError(ValueError):
    """A k-means file is missing its centroids, has an unknown format, or does not fit the features."""


# ----------------------------------------------------------------------------------------------------------
# restricted reading of scikit-learn / joblib pickles
# ----------------------------------------------------------------------------------------------------------

class _EstimatorState:
    """Inert stand-in for a scikit-learn k-means estimator: ``BUILD`` only stores its attribute dict."""

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slotstate)
            state = state[0]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError('estimator state must be a dict')
        self.__dict__.update(state)


class _JoblibArrayWrapper:
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``: its attributes describe the raw array bytes
    that joblib writes into the stream right after it."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError('NumpyArrayWrapper state must be a dict')
        self.__dict__.update(state)


class _Inert:
    """Stand-in for incidental objects pickled inside an estimator (a numpy ``RandomState``): accepts any
    constructor arguments and state, and does nothing with them."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


_INERT = {
    ('numpy.random._pickle', '__randomstate_ctor'), ('numpy.random._pickle', '__bit_generator_ctor'),
    ('numpy.random._pickle', '__generator_ctor'), ('numpy.random.mtrand', 'RandomState'),
    ('numpy.random', 'RandomState'),
}

_ESTIMATORS = {
    ('sklearn.cluster._kmeans', 'MiniBatchKMeans'), ('sklearn.cluster._kmeans', 'KMeans'),
    ('sklearn.cluster.k_means_', 'MiniBatchKMeans'), ('sklearn.cluster.k_means_', 'KMeans'),  # sklearn < 0.22
    ('sklearn.cluster', 'MiniBatchKMeans'), ('sklearn.cluster', 'KMeans'),
}


def _numpy_global(module: str, name: str):
    """numpy callables needed to rebuild plain arrays and scalars; all they do is allocate data."""
    if module in ('numpy', 'numpy.core.multiarray', 'numpy._core.multiarray', 'numpy.core.numeric',
                  'numpy._core.numeric'):
        if name == 'dtype':
            return np.dtype
        if name == 'ndarray':
            return np.ndarray
        if name == '_reconstruct':
            return _reconstruct
        if name == 'scalar':
            return _scalar
    return None


def _reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError('only plain numpy arrays may be rebuilt')
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise pickle.UnpicklingError('only numeric numpy scalars may be rebuilt')
    return np.frombuffer(data, dtype = dtype, count = 1)[0] if exists(data) else dtype.type()


class _RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler lets us hook BUILD
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file):
        super().__init__(file)
        self._file = file

    def find_class(self, module, name):
        if (module, name) in _ESTIMATORS:
            return _EstimatorState
        if (module, name) in _INERT or module.startswith('numpy.random.'):  # random states: kept inert
            return _Inert
        if (module, name) == ('joblib.numpy_pickle', 'NumpyArrayWrapper'):
            return _JoblibArrayWrapper
        found = _numpy_global(module, name)
        if exists(found):
            return found
        raise pickle.UnpicklingError(f'global {module}.{name} is not allowed by the restricted k-means reader')

    def load_build(self):
        super().load_build()
        top = self.stack[-1]
        if isinstance(top, _JoblibArrayWrapper):
            self.stack[-1] = self._read_joblib_array(top)
        elif isinstance(top, np.ndarray) and top.dtype.hasobject:
            raise pickle.UnpicklingError('object arrays are not allowed by the restricted k-means reader')

    dispatch[pickle.BUILD[0]] = load_build

    def _read_joblib_array(self, wrapper) -> np.ndarray:
        dtype = wrapper.__dict__.get('dtype')
        shape = tuple(int(s) for s in wrapper.__dict__.get('shape', ()))
        order = wrapper.__dict__.get('order', 'C')
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise pickle.UnpicklingError('joblib array of objects is not allowed by the restricted k-means reader')
        # joblib >= 1.2 writes one byte holding a padding length, then that many padding bytes
        if exists(wrapper.__dict__.get('numpy_array_alignment_bytes')):
            padding = self._file.read(1)
            if len(padding) != 1:
                raise pickle.UnpicklingError('truncated joblib array')
            self._file.read(int.from_bytes(padding, 'little'))
        count = math.prod(shape)
        data = self._file.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise pickle.UnpicklingError('truncated joblib array data')
        array = np.frombuffer(data, dtype = dtype, count = count).copy()
        if order == 'F':
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)


def read_sklearn_kmeans_pickle(path: str | os.PathLike) -> np.ndarray:
    """``cluster_centers_`` (k, d) of a pickled / joblib-dumped scikit-learn k-means, without executing code
    from the file. Raises ``KMeansFileError`` if the file needs anything outside the allow-list."""
    path = Path(path)
    with open(path, 'rb') as f:
        head = f.read(2)
        f.seek(0)
        if head[:1] != b'\x80':
            raise KMeansFileError(
                f'{path} is not an uncompressed pickle / joblib file (it may be a compressed joblib dump). '
                'Load it with allow_pickle=True if you trust it (runs code from the file; needs the [kmeans] extra), '
                'or convert it to centroids: np.save("centroids.npy", joblib.load(path).cluster_centers_)')
        try:
            obj = _RestrictedUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError) as error:
            raise KMeansFileError(
                f'cannot read {path} with the restricted k-means reader ({error}). If you trust the file, pass '
                'allow_pickle=True (runs code from the file; needs pip install audiolm-pytorch[kmeans]).') from error
    return _centroids_from_object(obj, path)


def _centroids_from_object(obj: Any, path) -> np.ndarray:
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, dict):
        state = obj
    else:
        state = getattr(obj, '__dict__', {})
    for key in ('cluster_centers_', 'centroids', 'centers'):
        if key in state:
            return np.asarray(state[key])
    raise KMeansFileError(f'{path} holds a {type(obj).__name__} without cluster_centers_ (is the k-means fitted?)')


def _load_pickle_trusted(path: Path) -> np.ndarray:
    try:
        import joblib
    except ImportError as error:
        raise ImportError('allow_pickle=True loads k-means pickles with joblib and scikit-learn: '
                          'pip install "audiolm-pytorch[kmeans]"') from error
    return _centroids_from_object(joblib.load(path), path)


# ----------------------------------------------------------------------------------------------------------
# centroids from any supported file
# ----------------------------------------------------------------------------------------------------------

@beartype
def load_kmeans_centroids(path: str | os.PathLike, *, allow_pickle: bool = False) -> tuple[Tensor, dict]:
    """Read k-means centroids. Returns ``(centroids (k, d) float32, config dict)``.

    Args:
        path: ``.safetensors``, ``.npy``, ``.pt``/``.pth``, or a scikit-learn pickle (``.bin``, ``.joblib``,
            ``.pkl``; read by the restricted reader described in this module's docstring).
        allow_pickle: for pickles the restricted reader cannot handle, fall back to ``joblib.load``
            (executes code from the file: trusted files only; needs the ``[kmeans]`` extra).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'k-means file not found: {path}')
    suffix = path.suffix.lower()
    config: dict = {}

    try:
        if suffix == '.safetensors':
            from safetensors import safe_open
            with safe_open(str(path), framework = 'pt') as f:
                metadata = f.metadata() or {}
                keys = list(f.keys())
                key = 'centroids' if 'centroids' in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise KMeansFileError(f'{path} holds tensors {keys}; expected one named "centroids"')
                centroids = f.get_tensor(key)
            if 'config' in metadata:
                config = json.loads(metadata['config'])
        elif suffix == '.npy':
            centroids = torch.from_numpy(np.load(path, allow_pickle = False))
        elif suffix in ('.pt', '.pth'):
            obj = torch.load(str(path), map_location = 'cpu', weights_only = True)
            if isinstance(obj, dict):
                obj = next((obj[k] for k in ('centroids', 'cluster_centers_', 'centers') if k in obj), obj)
            if not isinstance(obj, (Tensor, np.ndarray)):
                raise KMeansFileError(f'{path} holds no centroid tensor (expected a tensor or a dict with "centroids")')
            centroids = torch.as_tensor(obj)
        elif suffix in PICKLE_SUFFIXES:
            try:
                array = read_sklearn_kmeans_pickle(path)
            except KMeansFileError:
                if not allow_pickle:
                    raise
                array = _load_pickle_trusted(path)
            centroids = torch.from_numpy(np.ascontiguousarray(array))
        else:
            raise KMeansFileError(f'unknown k-means file type {suffix!r} for {path}: use .safetensors, .npy, .pt, '
                                  'or a scikit-learn joblib dump (.bin / .joblib)')
    except KMeansFileError:
        raise
    except ImportError:
        raise
    except Exception as error:  # corrupt files fail anywhere inside numpy / torch / safetensors readers
        raise KMeansFileError(f'cannot read k-means centroids from {path}: {type(error).__name__}: {error}') from error

    if centroids.ndim != 2 or centroids.shape[0] < 1 or not centroids.is_floating_point():
        raise KMeansFileError(f'{path}: centroids must be a float (clusters, dim) matrix, got '
                              f'{tuple(centroids.shape)} {centroids.dtype}')
    if not torch.isfinite(centroids).all():
        raise KMeansFileError(f'{path}: centroids contain NaN or infinite values')
    return centroids.float().contiguous(), config
