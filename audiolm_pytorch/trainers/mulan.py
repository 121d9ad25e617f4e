"""MuLaN training on the shared Accelerate loop: the step is one contrastive loss per micro-batch.

In multi-process runs MuLaN gathers the latents of every process itself (``torch.distributed``, initialised by
Accelerate), so the loss contrasts against the global batch.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from audiolm_pytorch.compat import reference_compat
from audiolm_pytorch.musiclm.mulan import MuLaN
from audiolm_pytorch.trainers.base import Batch, Trainer, trainer_kwargs
from audiolm_pytorch.utils import beartype, exists


def mulan_inputs(batch: Batch) -> tuple[Tensor, dict]:
    """A routed batch -> ``(wavs (b, n), text kwargs for MuLaN)``: float tensors are audio (multi-channel items
    ``(c, n)`` are averaged to mono), an integer tensor is token ids, strings are raw texts."""
    audio = [t for t in batch.waves if t.is_floating_point()]
    token_ids = [t for t in batch.waves if not t.is_floating_point()]
    if len(audio) != 1:
        raise ValueError(f'MuLaNTrainer needs exactly one audio tensor per item, the batch holds {len(audio)}')
    wavs = audio[0]
    if wavs.ndim == 3:
        # (b, channels, n): mix down to mono (flattening would play the channels one after the other)
        wavs = wavs.mean(dim = 1)
    if wavs.ndim != 2:
        raise ValueError(f'MuLaNTrainer needs audio items of shape (n,) or (channels, n), got a batch of '
                         f'{tuple(audio[0].shape)}')
    if exists(batch.texts):
        if token_ids:
            raise ValueError('the batch holds both strings and token ids: yield one kind of text')
        return wavs, dict(raw_texts = batch.texts)
    if len(token_ids) != 1:
        raise ValueError('MuLaNTrainer needs one text per item: a string, or a (t,) integer tensor of token ids')
    return wavs, dict(texts = token_ids[0].long())


# its former name (another function, ``data.split_text_audio``, routes dataset items): kept importable
split_text_audio = mulan_inputs


@reference_compat('MuLaNTrainer')
class MuLaNTrainer(Trainer):
    """Contrastive training of ``MuLaN`` on (text, audio) pairs.

    Dataset items hold, in any order, one audio tensor ``(n,)`` and one text (a string, tokenized by the text
    tower, or a ``(t,)`` tensor of token ids; padding id 0). ``folder=`` may name a manifest (CSV / TSV / JSONL
    with ``path`` and ``text`` columns, read with ``TextAudioDataset`` at ``target_sample_hz``).

    Args (see :class:`~audiolm_pytorch.trainers.base.Trainer` for the shared ones):
        mulan: the model. dataset: the (text, audio) dataset.
        data_max_length: random crop (samples) of audio read from a manifest. target_sample_hz: the rate audio
            read from a manifest is resampled to. use_lion: the Lion optimizer instead of AdamW (as the
            established trainer offers; use a smaller lr).

    Checkpoints: ``results_folder/mulan.{step}.pt`` (``MuLaN.init_and_load_from`` reads them).
    """

    checkpoint_name = 'mulan'

    @beartype
    def __init__(
        self, mulan: MuLaN, dataset: Dataset | None = None, *, num_train_steps: int | None = None, batch_size: int,
        folder: str | Path | None = None, train_dataloader: DataLoader | None = None,
        val_dataloader: DataLoader | None = None, data_max_length: int | None = None,
        target_sample_hz: int | None = None, lr: float = 3e-4, grad_accum_every: int = 1, wd: float = 0.,
        max_grad_norm: float | None = 0.5, valid_frac: float = 0.05, random_split_seed: int = 42,
        save_results_every: int = 100, save_model_every: int = 1000, results_folder: str | Path = './results',
        accelerate_kwargs: dict | None = None, force_clear_prev_results: bool | None = None, use_lion: bool = False,
        **kwargs,
    ):
        if num_train_steps is None:   # as in the established trainer: len(dataset) steps
            if dataset is None:
                raise ValueError('pass num_train_steps= (it defaults to len(dataset) only when dataset= is given)')
            num_train_steps = len(dataset)
        self.mulan = mulan
        self.use_lion = use_lion
        self.data_max_length, self.target_sample_hz = data_max_length, target_sample_hz
        super().__init__(mulan, **trainer_kwargs(locals()), **kwargs)

    def make_optimizer(self, params, *, lr: float, weight_decay: float):
        if self.use_lion:
            from audiolm_pytorch.trainers.lion import Lion
            return Lion(params, lr = lr, betas = self.betas, weight_decay = weight_decay)
        return super().make_optimizer(params, lr = lr, weight_decay = weight_decay)

    def make_dataset(self, folder) -> Dataset:
        if not Path(folder).is_file():
            raise ValueError(f'MuLaNTrainer needs text for every clip: pass folder= as a manifest file (CSV / TSV / '
                             f'JSONL with path and text columns) or dataset=, not the directory {folder}')
        if not exists(self.target_sample_hz):
            raise ValueError('reading audio from a manifest needs target_sample_hz= (the rate MuLaN trains at)')
        from audiolm_pytorch.data import TextAudioDataset
        return TextAudioDataset(folder, target_sample_hz = self.target_sample_hz, max_length = self.data_max_length)

    def compute_loss(self, module: nn.Module, batch: Batch):
        wavs, text = mulan_inputs(batch)
        if 'texts' in text:   # collate_pad pads token ids with -1: that is the text transformer's padding
            text['texts'] = text['texts'].masked_fill(text['texts'] < 0, getattr(self.mulan.text, 'pad_id', 0))
        return module(wavs, **text), {}
