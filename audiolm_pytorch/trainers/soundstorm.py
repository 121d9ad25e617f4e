"""SoundStorm training on the shared Accelerate loop: the step is one masked-token loss per micro-batch."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.soundstorm import SoundStorm
from audiolm_pytorch.trainers.base import Batch, Sample, Trainer, trainer_kwargs
from audiolm_pytorch.utils import beartype, default, exists


def split_fields(waves: tuple[Tensor, ...]) -> dict:
    """Route a batch's tensors by kind: float ``(b, n)`` audio, integer ``(b, n, q)`` codes, integer ``(b, m)``
    semantic ids, bool ``(b, n)`` frame mask. Datasets may yield any of these, in any order."""
    fields = {}

    def put(name, tensor):
        if name in fields:
            raise ValueError(f'the batch holds two {name} tensors; SoundStormTrainer expects at most one of each of '
                             'audio (float), codes (int, (n, q)), semantic ids (int, (m,)) and mask (bool, (n,))')
        fields[name] = tensor

    for tensor in waves:
        if tensor.dtype == torch.bool:
            put('mask', tensor)
        elif tensor.is_floating_point():
            put('audio', tensor.reshape(tensor.shape[0], -1) if tensor.ndim == 3 else tensor)
        elif tensor.ndim == 3:
            put('codes', tensor)
        elif tensor.ndim == 2:
            put('semantic', tensor)
        else:
            raise ValueError(f'cannot interpret a batch tensor of shape {tuple(tensor.shape)} and dtype {tensor.dtype}')
    if 'audio' in fields and 'codes' in fields:
        raise ValueError('the batch holds both audio and codes: yield one of them')
    if 'audio' not in fields and 'codes' not in fields:
        raise ValueError('the batch holds neither audio (float) nor codes (int (n, q))')
    return fields


@reference_compat('SoundStormTrainer')
class SoundStormTrainer(Trainer):
    """Train a ``SoundStorm`` on codes or raw audio.

    Dataset items (collated by ``get_dataloader``, or pass your own ``train_dataloader``) may hold, in any
    order: audio ``(n,)`` float at the codec's rate (needs ``soundstream`` on the model) or codes ``(n, q)``
    integers; optionally semantic ids ``(m,)`` integers (otherwise computed by the model's ``wav2vec`` from
    the audio, when attached) and a frame mask ``(n,)`` bool. ``folder=`` reads audio files at the codec's rate.

    Args (see :class:`~audiolm_pytorch.trainers.base.Trainer` for the shared ones):
        model: the ``SoundStorm`` to train (its attached codec / tokenizer stay frozen and are not saved).
        num_warmup_steps: linear learning-rate warmup (alias of ``warmup_steps``) from ``initial_lr`` to ``lr``;
            then, as in soundstorm-pytorch, ``CosineAnnealingLR(T_max=num_train_steps)`` unless ``scheduler=`` (with
            ``scheduler_kwargs``) is given (``scheduler=None`` for a constant learning rate).
        data_max_length / data_max_length_seconds: random crop of audio files read from ``folder``.
        num_sample_steps: decoding steps of the sample generated at each ``save_results_every``.
        tokens: a token folder written by ``audiolm prepare`` (or a SoundStorm ``TokenDataset``): train on its codes
            (and semantic ids, when the model is conditioned on them) with no codec or tokenizer loaded; crops of
            ``data_max_length`` / ``data_max_length_seconds`` are taken in token space.

    Checkpoints: ``results_folder/soundstorm.{step}.pt`` (``SoundStorm.init_and_load_from`` reads them);
    samples (with a codec attached): the original clip's codes decoded, and a generation from its semantic
    tokens, under ``results_folder/samples``.
    """

    checkpoint_name = 'soundstorm'

    @beartype
    def __init__(
        self, model: SoundStorm, *, num_train_steps: int, batch_size: int, num_warmup_steps: int | None = None,
        folder: str | Path | None = None, dataset: Dataset | None = None,
        train_dataloader: DataLoader | None = None, val_dataloader: DataLoader | None = None,
        data_max_length: int | None = None, data_max_length_seconds: float | None = None,
        lr: float = 3e-4, grad_accum_every: int = 1, wd: float = 0., max_grad_norm: float | None = 0.5,
        valid_frac: float = 0.05, random_split_seed: int = 42, save_results_every: int = 100,
        save_model_every: int = 1000, results_folder: str | Path = './results', accelerate_kwargs: dict | None = None,
        force_clear_prev_results: bool | None = None, num_sample_steps: int | None = None,
        tokens: str | Path | Dataset | None = None, initial_lr: float = 1e-5, **kwargs,
    ):
        from audiolm_pytorch.tokens import TokenDataset
        from audiolm_pytorch.trainers.transformers import accepts_file_end, token_dataset
        if exists(data_max_length) and exists(data_max_length_seconds):
            raise ValueError('pass data_max_length (samples) or data_max_length_seconds, not both')
        self.soundstorm = model
        codec = model.soundstream
        if exists(tokens):
            dataset = token_dataset(tokens, stage = 'soundstorm', data_max_length = data_max_length,
                                    data_max_length_seconds = data_max_length_seconds,
                                    given = dict(folder = folder, dataset = dataset, train_dataloader = train_dataloader),
                                    num_quantizers = model.net.num_quantizers,
                                    with_semantic = exists(model.semantic_token_emb))
            data_max_length = data_max_length_seconds = None
        self.token_data = dataset if isinstance(dataset, TokenDataset) else None
        if exists(self.token_data):
            self._check_tokens(self.token_data)
        self._pass_file_end = accepts_file_end(model)
        if exists(data_max_length_seconds):
            if not exists(codec):
                raise ValueError('data_max_length_seconds needs a codec attached to the model (soundstream=)')
            data_max_length = int(data_max_length_seconds * codec.target_sample_hz)
        self.data_max_length = data_max_length
        self.num_sample_steps = num_sample_steps
        if exists(num_warmup_steps):
            kwargs['warmup_steps'] = num_warmup_steps
        self.warmup_start_lr = initial_lr
        if 'scheduler' not in kwargs:   # as in soundstorm-pytorch: cosine annealing after the warmup
            from torch.optim.lr_scheduler import CosineAnnealingLR
            kwargs['scheduler'] = CosineAnnealingLR
            kwargs['scheduler_kwargs'] = {'T_max': num_train_steps, **(kwargs.get('scheduler_kwargs') or {})}
        super().__init__(model, **trainer_kwargs(locals()), **kwargs)

    def make_dataset(self, folder) -> Dataset:
        codec = self.soundstorm.soundstream
        if not exists(codec):
            raise ValueError('folder= reads audio, which needs a codec attached to the model (soundstream=); '
                             'for pre-computed codes pass dataset= or train_dataloader=')
        from audiolm_pytorch.data import SoundDataset
        return SoundDataset(folder, target_sample_hz = codec.target_sample_hz, max_length = self.data_max_length,
                            seq_len_multiple_of = getattr(codec, 'seq_len_multiple_of', None))

    def _check_tokens(self, dataset):
        from audiolm_pytorch.tokens import check_tokens_fit, frame_rate
        model, net = self.soundstorm, self.soundstorm.net
        if exists(model.semantic_token_emb) != dataset.with_semantic:
            raise ValueError('the SoundStorm ' + ('is conditioned on semantic ids but the TokenDataset yields none'
                             if exists(model.semantic_token_emb) else 'has no semantic embedding (num_semantic_token_ids=) '
                             'but the TokenDataset yields semantic ids: build it with with_semantic=False'))
        check_tokens_fit(dataset, model = 'SoundStorm', wav2vec = model.wav2vec, codec = model.soundstream,
                         num_semantic_tokens = model.num_semantic_token_ids, codebook_size = net.codebook_size,
                         rq_groups = net.grouped_quantizers)
        if dataset.with_semantic and exists(model.semantic_frame_hz) and exists(model.codec_frame_hz):
            ratio = frame_rate(dataset.semantic_identity) / frame_rate(dataset.codec_identity)
            if abs(float(ratio) - model.semantic_frame_hz / model.codec_frame_hz) > 1e-6:
                raise ValueError(f'the tokens have {float(ratio):.4f} semantic ids per codec frame but the SoundStorm '
                                 f'was built for {model.semantic_frame_hz / model.codec_frame_hz:.4f} (its rates)')

    def _token_fields(self, batch: Batch) -> dict:
        """Token batches: ``(codes, [semantic,] file_end)`` as yielded by a SoundStorm ``TokenDataset``."""
        codes, *rest = batch.waves
        fields = dict(codes = codes, file_end = rest[-1])
        model = self.soundstorm
        if len(rest) == 2:
            semantic = rest[0]
            if not (exists(model.semantic_frame_hz) and exists(model.codec_frame_hz)):
                # a model built without the rates would align by the lengths of each (cropped, padded) batch:
                # align here with the corpus' exact rates instead
                from audiolm_pytorch.tokens import frame_rate
                data = self.token_data
                ratio = float(frame_rate(data.semantic_identity) / frame_rate(data.codec_identity))
                semantic = model.align_semantic(semantic, codes.shape[1], semantic_per_frame = ratio)
            fields['semantic'] = semantic
        return fields

    def compute_loss(self, module: nn.Module, batch: Batch):
        fields = self._token_fields(batch) if exists(self.token_data) else split_fields(batch.waves)
        inputs = fields.get('codes', fields.get('audio'))
        mask, semantic = fields.get('mask'), fields.get('semantic')
        if 'codes' in fields and not exists(mask) and bool((inputs < 0).any()):
            mask = (inputs >= 0).all(dim = -1)       # codes of different lengths, padded with -1 by collate_pad
        if exists(semantic):                          # collate_pad's -1 is the model's semantic padding
            semantic = semantic.masked_fill(semantic < 0, self.soundstorm.semantic_pad_id)
        extra = dict(file_end = fields['file_end']) if 'file_end' in fields and self._pass_file_end else {}
        loss, breakdown = module(inputs, cond_semantic_token_ids = semantic, mask = mask, **extra)
        return loss, dict(accuracy = breakdown.accuracy)

    @torch.no_grad()
    def make_samples(self, batch: Batch) -> list[Sample]:
        model = self.soundstorm
        codec = model.soundstream
        if not exists(codec):
            return []
        fields = self._token_fields(batch) if exists(self.token_data) else split_fields(batch.waves)
        codes = model.tokenize(fields['audio'][:1]) if 'audio' in fields else fields['codes'][:1]
        semantic = fields.get('semantic')
        if not exists(semantic) and 'audio' in fields and exists(model.wav2vec):
            semantic = model.semantic_tokens_from_audio(fields['audio'][:1])
        semantic = semantic[:1] if exists(semantic) and exists(model.semantic_token_emb) else None
        if exists(self.token_data):          # token crops of short clips end in -1 padding: keep the real frames
            codes = codes[:, :int((codes[0] >= 0).all(dim = -1).sum())]
            semantic = semantic[:, :int((semantic[0] >= 0).sum())] if exists(semantic) else None
            if codes.shape[1] == 0:
                return []
        sample_hz = codec.target_sample_hz
        generated = model.generate(codes.shape[1], cond_semantic_token_ids = semantic, batch_size = 1,
                                   steps = default(self.num_sample_steps, model.steps))
        samples = [Sample('original', model.decode(codes).reshape(-1), sample_hz)]
        generated = generated if isinstance(generated, Tensor) else generated[0]
        samples.append(Sample('generated', generated.reshape(-1), sample_hz))
        return samples

    def generate(self, *args, **kwargs):
        """``SoundStorm.generate`` on the trained model."""
        return self.soundstorm.generate(*args, **kwargs)
