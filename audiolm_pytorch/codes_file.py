"""The codes file format of ``audiolm tokenize`` / ``audiolm decode``: one integer array ``(frames, quantizers)``
per input, as ``.npy`` or as ``.safetensors`` (tensor ``codes`` plus string metadata: ``source``, ``sample_hz``,
``hop``, ``num_quantizers``, ``codebook_size``, so that ``decode`` can refuse codes written by another codec).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ['read_codes', 'write_codes', 'check_codes_fit_codec', 'tokenize_file', 'decode_codes', 'unique_stem']

CODES_FORMATS = ('npy', 'safetensors')


def read_codes(path, *, return_metadata: bool = False):
    """Codes ``(1, frames, q)`` from a ``.npy`` or ``.safetensors`` file written by ``audiolm tokenize`` (and, with
    ``return_metadata``, the safetensors metadata: ``sample_hz``, ``hop``, ``codebook_size``, ... as strings)."""
    import numpy as np
    import torch
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'codes file not found: {path}')
    metadata = {}
    if path.suffix == '.npy':
        try:
            codes = torch.from_numpy(np.load(path, allow_pickle = False))
        except ValueError as error:
            raise ValueError(f'{path} is not a readable .npy codes file ({error})') from error
    elif path.suffix == '.safetensors':
        from safetensors.torch import load_file
        try:
            from safetensors import safe_open
            codes = load_file(str(path))['codes']
            with safe_open(str(path), framework = 'pt') as f:
                metadata = dict(f.metadata() or {})
        except Exception as error:
            raise ValueError(f'{path} is not a codes file written by `audiolm tokenize` ({error})') from error
    else:
        raise ValueError(f'codes file {path} must end in .npy or .safetensors')
    if codes.ndim == 2:
        codes = codes[None]
    if codes.ndim != 3 or codes.is_floating_point():
        raise ValueError(f'{path} holds {tuple(codes.shape)} {codes.dtype} values, expected integer codes (frames, q)')
    return (codes.long(), metadata) if return_metadata else codes.long()


def write_codes(target, codes, *, codec, source) -> Path:
    """Write ``codes`` ``(frames, q)`` to ``target`` (``.npy``, or ``.safetensors`` with the codec's identity as
    metadata). Returns the path."""
    target = Path(target)
    if target.suffix == '.npy':
        import numpy as np
        np.save(target, codes.numpy())
    elif target.suffix == '.safetensors':
        from safetensors.torch import save_file
        save_file({'codes': codes.contiguous()}, str(target), metadata = dict(
            source = str(source), sample_hz = str(codec.target_sample_hz), hop = str(codec.downsample_factor),
            num_quantizers = str(codes.shape[-1]), codebook_size = str(codec.codebook_size)))
    else:
        raise ValueError(f'codes file {target} must end in .npy or .safetensors')
    return target


def check_codes_fit_codec(codec, codes, metadata: dict, path) -> None:
    """Refuse codes written by another codec (decoding them would give noise, not an error)."""
    expected = dict(codebook_size = codec.codebook_size, sample_hz = codec.target_sample_hz,
                    hop = codec.downsample_factor)
    for key, value in expected.items():
        stored = metadata.get(key)
        if stored is not None and str(stored) != str(value):
            raise ValueError(f'{path} was tokenized by a codec with {key}={stored}, but this codec has {key}={value}: '
                             'decode with the codec that wrote the codes')
    levels = codec.num_quantizers * getattr(codec, 'rq_groups', 1)
    if codes.shape[-1] > levels:
        raise ValueError(f'{path} holds {codes.shape[-1]} quantizer levels, but the codec has {levels}')
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codec.codebook_size):
        raise ValueError(f'{path} holds codes in [{int(codes.min())}, {int(codes.max())}], outside the codec\'s '
                         f'codebook [0, {codec.codebook_size})')


def tokenize_file(codec, path, num_quantizers, device):
    import torch
    from audiolm_pytorch.audio import load_audio
    wave = load_audio(path, target_sample_hz = codec.target_sample_hz).wave.to(device)   # (1, n)
    if wave.shape[-1] < codec.downsample_factor:
        raise ValueError(f'{path} is shorter than one codec frame ({codec.downsample_factor} samples at '
                         f'{codec.target_sample_hz} Hz)')
    with torch.no_grad():
        return codec.tokenize(wave, num_quantizers = num_quantizers)                      # (1, frames, q)


def decode_codes(codec, codes):
    import torch
    with torch.no_grad():
        return codec.decode_from_codebook_indices(codes).reshape(-1).float().cpu()


def unique_stem(path: Path, used: set) -> str:
    """An output name for ``path`` no earlier input of this run has taken (inputs with the same file name in
    different folders must not overwrite each other's codes)."""
    stem = path.stem
    if stem in used:
        stem = f'{path.parent.name}_{path.stem}'
    base, index = stem, 1
    while stem in used:
        stem = f'{base}_{index}'
        index += 1
    used.add(stem)
    return stem
