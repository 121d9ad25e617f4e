"""Audio Spectrogram Transformer (AST, arXiv 2104.01778): the audio tower of MuLaN.

waveform -> log power spectrogram (torch STFT) -> SpecAugment-style time stretch and frequency / time masking
(training only, arXiv 1904.08779) -> non-overlapping square patches with Dual PatchNorm (arXiv 2302.01327)
-> patch dropout (training only, arXiv 2208.07220) -> transformer encoder with axial 2-D rotary positions
-> mean-pooled embedding ``(b, dim)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from audiolm_pytorch.audio import check_audio_values, stft_magnitude
from audiolm_pytorch.checkpoint import Checkpointable
from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.nn.transformer import TransformerLayer, stack_layers
from audiolm_pytorch.utils import beartype, default


# ----------------------------------------------------------------------------------------------------------
# encoder: the shared pre-norm layers, fed 2-D rotary positions
# ----------------------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Non-causal stack of ``audiolm_pytorch.nn.transformer.TransformerLayer`` that takes its rotary
    ``(cos, sin)`` from the caller (the shared ``Transformer`` only builds 1-D positions).

    ``forward(x (b, n, dim), rotary=(cos, sin)) -> (b, n, dim)``.
    """

    def __init__(self, *, dim: int, depth: int, heads: int = 8, dim_head: int = 64, ff_mult: float = 4.,
                 attn_dropout: float = 0., ff_dropout: float = 0., qk_norm: bool = False):
        super().__init__()
        self.layers = nn.ModuleList([
            TransformerLayer(dim = dim, heads = heads, dim_head = dim_head, attn_dropout = attn_dropout,
                             ff_dropout = ff_dropout, ff_mult = ff_mult, dim_context = None, causal = False,
                             qk_norm = qk_norm)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None, return_all_layers: bool = False):
        hidden = []
        for layer in self.layers:
            x = x + layer.attn(layer.attn_norm(x), rotary = rotary)
            x = x + layer.ff(x)
            hidden.append(x)
        if return_all_layers:   # every layer but the last, (depth - 1, b, n, dim), before the final norm
            return self.norm(x), stack_layers(hidden[:-1], x)
        return self.norm(x)


# ----------------------------------------------------------------------------------------------------------
# spectrogram augmentation (torch only)
# ----------------------------------------------------------------------------------------------------------

def time_stretch(spec: Tensor, rate: float) -> Tensor:
    """Stretch ``spec (b, f, t)`` along time to ``round(t / rate)`` frames by linear interpolation of the
    magnitudes (rate < 1 slows the music down, like torchaudio's ``TimeStretch`` but without a phase vocoder:
    only magnitudes are needed downstream)."""
    frames = spec.shape[-1]
    new_frames = max(1, round(frames / rate))
    if new_frames == frames:
        return spec
    return F.interpolate(spec, size = new_frames, mode = 'linear', align_corners = False)


def random_mask_along(spec: Tensor, max_width: int, dim: int, fill: Tensor) -> Tensor:
    """Per example, replace a band of ``uniform[0, max_width)`` consecutive bins along ``dim`` (1 = frequency,
    2 = time) of ``spec (b, f, t)`` with ``fill (b, 1, 1)`` (SpecAugment masking)."""
    batch, size = spec.shape[0], spec.shape[dim]
    max_width = min(max_width, size // 2 + 1)   # widths are < max_width: at most half the axis is hidden
    if max_width <= 0:
        return spec
    device = spec.device
    width = (torch.rand(batch, device = device) * max_width).long()                          # (b,)
    start = (torch.rand(batch, device = device) * (size - width + 1).float()).long()         # (b,)
    positions = torch.arange(size, device = device)
    band = (positions[None] >= start[:, None]) & (positions[None] < (start + width)[:, None])  # (b, size)
    band = band[:, :, None] if dim == 1 else band[:, None, :]
    return torch.where(band, fill, spec)


# ----------------------------------------------------------------------------------------------------------
# axial 2-D rotary positions
# ----------------------------------------------------------------------------------------------------------

class AxialRotary2D(nn.Module):
    """Rotary embedding over two axes (frequency patch row, time patch column): half of each head's rotary
    frequencies turn with the row, half with the column, so attention sees 2-D relative offsets while staying
    on the SDPA fast path (no bias matrix). Works for any number of time patches."""

    def __init__(self, dim_head: int, theta: float = 100.):
        super().__init__()
        if dim_head < 4:
            raise ValueError(f'2-D rotary positions need dim_head >= 4, got {dim_head}')
        quarter = dim_head // 4
        self.theta, self.quarter = theta, quarter
        inv_freq = 1. / (theta ** (torch.arange(quarter).float() / quarter))
        self.register_buffer('inv_freq', inv_freq, persistent = False)

    def forward(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """``rows, cols``: ``(b, n)`` patch coordinates -> ``(cos, sin)`` each ``(b, 1, n, 4 * (dim_head // 4))``."""
        # recomputed in float32: the buffer is cast with the module (bf16 frequencies would misplace patches)
        inv_freq = 1. / (self.theta ** (torch.arange(self.quarter, device = rows.device).float() / self.quarter))
        angles = torch.cat((rows.float()[..., None] * inv_freq, cols.float()[..., None] * inv_freq), dim = -1)
        angles = torch.cat((angles, angles), dim = -1)   # layout expected by apply_rotary's rotate_half
        angles = rearrange(angles, 'b n r -> b 1 n r')
        return angles.cos(), angles.sin()


# ----------------------------------------------------------------------------------------------------------
# the audio tower
# ----------------------------------------------------------------------------------------------------------

@reference_compat('AudioSpectrogramTransformer')
class AudioSpectrogramTransformer(Checkpointable, nn.Module):
    """Audio tower of MuLaN: waveform -> pooled embedding.

    Args:
        dim, depth, heads, dim_head: encoder size. patch_size: side of the square spectrogram patches.
        spec_n_fft, spec_win_length, spec_hop_length (default ``spec_win_length // 2``), spec_power, spec_center:
            STFT of the input; ``spec_log`` compresses magnitudes with ``log(clamp(x, spec_log_eps))``.
        spec_aug_stretch_factor: in training, each batch is stretched in time by a rate drawn uniformly between
            1 and this factor (1 disables). spec_aug_freq_mask / spec_aug_time_mask: maximum widths (bins /
            frames) of one frequency and one time mask per example in training (0 disables); a mask never
            covers more than half of its axis, so some of the signal always survives.
        patch_dropout_prob: fraction of patches dropped per example in training.
        accept_spec: ``forward`` takes a ready spectrogram ``(b, frames, freqs)`` (``(b, freqs, frames)`` with
            ``accept_spec_time_first=False``) instead of a waveform; augmentation still applies in training.
        attn_dropout, ff_dropout, ff_mult, qk_norm: encoder options.

    ``forward(wav (b, n) or (b, 1, n)) -> (b, dim)``.
    """

    @beartype
    def __init__(
        self, *, dim: int, depth: int, heads: int = 8, dim_head: int = 64, patch_size: int = 16,
        spec_n_fft: int = 128, spec_win_length: int = 24, spec_hop_length: int | None = None, spec_power: float = 2.,
        spec_center: bool = True, spec_log: bool = True, spec_log_eps: float = 1e-6,
        spec_aug_stretch_factor: float = 0.8, spec_aug_freq_mask: int = 16, spec_aug_time_mask: int = 32,
        patch_dropout_prob: float = 0.25, attn_dropout: float = 0., ff_dropout: float = 0., ff_mult: float = 4.,
        qk_norm: bool = False, accept_spec: bool = False, accept_spec_time_first: bool = True,
    ):
        super().__init__()
        if spec_win_length > spec_n_fft:
            raise ValueError(f'spec_win_length ({spec_win_length}) must be <= spec_n_fft ({spec_n_fft})')
        if not spec_aug_stretch_factor > 0:
            raise ValueError(f'spec_aug_stretch_factor must be positive, got {spec_aug_stretch_factor}')
        if not 0. <= patch_dropout_prob < 1.:
            raise ValueError(f'patch_dropout_prob must be in [0, 1), got {patch_dropout_prob}')

        self.dim = dim
        self.patch_size = patch_size
        self.spec_n_fft, self.spec_win_length = spec_n_fft, spec_win_length
        self.spec_hop_length = default(spec_hop_length, max(1, spec_win_length // 2))
        self.spec_power, self.spec_center = spec_power, spec_center
        self.spec_log, self.spec_log_eps = spec_log, spec_log_eps
        self.spec_aug_stretch_factor = spec_aug_stretch_factor
        self.spec_aug_freq_mask, self.spec_aug_time_mask = spec_aug_freq_mask, spec_aug_time_mask
        self.patch_dropout_prob = patch_dropout_prob
        self.accept_spec, self.accept_spec_time_first = accept_spec, accept_spec_time_first
        self.register_buffer('window', torch.hann_window(spec_win_length), persistent = False)

        patch_dim = patch_size ** 2
        # Dual PatchNorm (arXiv 2302.01327): layer norms before and after the patch projection
        self.to_patch_tokens = nn.Sequential(nn.LayerNorm(patch_dim), nn.Linear(patch_dim, dim), nn.LayerNorm(dim))
        self.rotary = AxialRotary2D(dim_head)
        self.encoder = Encoder(dim = dim, depth = depth, heads = heads, dim_head = dim_head, ff_mult = ff_mult,
                               attn_dropout = attn_dropout, ff_dropout = ff_dropout, qk_norm = qk_norm)

    def spectrogram(self, wav: Tensor) -> Tensor:
        """``(b, n)`` -> ``(b, spec_n_fft // 2 + 1, frames)`` (log) power spectrogram, float32."""
        spec = stft_magnitude(wav, n_fft = self.spec_n_fft, hop_length = self.spec_hop_length,
                              win_length = self.spec_win_length, window = self.window, center = self.spec_center,
                              power = self.spec_power)
        if self.spec_log:
            spec = torch.log(spec.clamp(min = self.spec_log_eps))
        return spec

    def augment(self, spec: Tensor) -> Tensor:
        """SpecAugment-style training augmentation of ``spec (b, f, t)``."""
        if self.spec_aug_stretch_factor != 1.:
            low, high = sorted((1., self.spec_aug_stretch_factor))
            rate = low + (high - low) * torch.rand((), device = 'cpu').item()   # host scalar: no device sync
            spec = time_stretch(spec, rate)
        fill = spec.mean(dim = (1, 2), keepdim = True)   # masked bins take the example's mean (log) energy
        if self.spec_aug_freq_mask > 0:
            spec = random_mask_along(spec, self.spec_aug_freq_mask, 1, fill)
        if self.spec_aug_time_mask > 0:
            spec = random_mask_along(spec, self.spec_aug_time_mask, 2, fill)
        return spec

    def patchify(self, spec: Tensor) -> tuple[Tensor, int, int]:
        """``(b, f, t)`` -> patches ``(b, rows * cols, patch_size ** 2)``, rows, cols. Both axes are cut to a
        multiple of ``patch_size`` (padded with silence up to one patch when shorter)."""
        p = self.patch_size
        freqs, frames = spec.shape[-2:]
        silence = math.log(self.spec_log_eps) if self.spec_log else 0.
        spec = F.pad(spec, (0, max(0, p - frames), 0, max(0, p - freqs)), value = silence)
        freqs, frames = (max(s, p) // p * p for s in (freqs, frames))
        spec = spec[:, :freqs, :frames]
        patches = rearrange(spec, 'b (h p1) (w p2) -> b (h w) (p1 p2)', p1 = p, p2 = p)
        return patches, freqs // p, frames // p

    @beartype
    def forward(self, wav: Tensor, return_tokens: bool = False, force_no_patch_dropout: bool = False,
                return_all_layers: bool = False):
        """Args:
            wav: ``(b, n)`` or ``(b, 1, n)`` waveform (a spectrogram with ``accept_spec=True``).
            return_tokens: return the encoded patch tokens ``(b, patches, dim)`` instead of the pooled embedding.
            force_no_patch_dropout: keep every patch even in training.
            return_all_layers: also return every encoder layer's tokens but the last's, ``(depth - 1, b, patches,
                dim)``.

        Returns: ``(b, dim)`` pooled embedding (and the layers).
        """
        if self.accept_spec:
            if wav.ndim != 3:
                raise ValueError(f'accept_spec=True: expected a spectrogram (b, frames, freqs), got {tuple(wav.shape)}')
            spec = rearrange(wav, 'b t f -> b f t') if self.accept_spec_time_first else wav
            return self._encode_spec(spec.float(), return_tokens, force_no_patch_dropout, return_all_layers)
        if wav.ndim == 3 and wav.shape[1] == 1:
            wav = rearrange(wav, 'b 1 n -> b n')
        if wav.ndim != 2:
            raise ValueError(f'AudioSpectrogramTransformer expects a waveform (b, n) or (b, 1, n), got {tuple(wav.shape)}')
        check_audio_values(wav, name = 'audio to embed')
        if wav.shape[-1] < self.spec_n_fft:
            wav = F.pad(wav, (0, self.spec_n_fft - wav.shape[-1]))   # very short clips: pad with silence

        spec = self.spectrogram(wav)
        return self._encode_spec(spec, return_tokens, force_no_patch_dropout, return_all_layers)

    def _encode_spec(self, spec: Tensor, return_tokens: bool, force_no_patch_dropout: bool, return_all_layers: bool):
        if self.training:
            spec = self.augment(spec)

        patches, rows, cols = self.patchify(spec)
        batch, num_patches, device = patches.shape[0], patches.shape[1], patches.device
        tokens = self.to_patch_tokens(patches.to(self.to_patch_tokens[1].weight.dtype))

        grid = torch.arange(num_patches, device = device)
        row_ids = repeat(grid // cols, 'n -> b n', b = batch)
        col_ids = repeat(grid % cols, 'n -> b n', b = batch)

        if self.training and self.patch_dropout_prob > 0. and num_patches > 1 and not force_no_patch_dropout:
            # PatchDropout (arXiv 2208.07220): keep a random subset of patches per example
            num_keep = max(1, int(num_patches * (1. - self.patch_dropout_prob)))
            keep = torch.randn(batch, num_patches, device = device).topk(num_keep, dim = -1).indices
            tokens = tokens.gather(1, repeat(keep, 'b k -> b k d', d = tokens.shape[-1]))
            row_ids, col_ids = row_ids.gather(1, keep), col_ids.gather(1, keep)

        tokens, layers = self.encoder(tokens, rotary = self.rotary(row_ids, col_ids), return_all_layers = True)
        out = tokens if return_tokens else tokens.mean(dim = 1)
        return (out, layers) if return_all_layers else out
