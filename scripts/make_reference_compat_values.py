"""Write ``tests/assets/reference_compat_values.pt``: outputs of the reference ``musiclm_pytorch`` contrastive losses
and ``audiolm_pytorch.get_embeds`` (2.4.0) on fixed inputs, which ``tests/compat/test_reference_keywords.py`` compares ours against.

Run ONCE with the reference packages installed in their own virtualenv, never with this repository on the path
(the reference uses the same import name ``audiolm_pytorch``); fairseq only has to be importable::

    mkdir -p /tmp/fakefairseq/fairseq && touch /tmp/fakefairseq/fairseq/__init__.py
    PYTHONPATH=/tmp/fakefairseq /path/to/venv-ref/bin/python scripts/make_reference_compat_values.py
"""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

OUT = Path(__file__).resolve().parent.parent / 'tests' / 'assets' / 'reference_compat_values.pt'


def main():
    here = str(Path(__file__).resolve().parent.parent)
    if any(Path(p or '.').resolve() == Path(here) for p in sys.path):
        raise SystemExit('run this with the reference packages only (not this repository) on the path')
    from audiolm_pytorch import get_embeds
    from musiclm_pytorch import SigmoidContrastiveLearning, SoftmaxContrastiveLearning

    torch.manual_seed(0)
    audio = F.normalize(torch.randn(2, 6, 8), dim = -1)
    text = F.normalize(torch.randn(2, 6, 8), dim = -1)
    values = dict(audio = audio, text = text)
    for decoupled in (False, True):
        loss = SoftmaxContrastiveLearning(layers = 2, decoupled_contrastive_learning = decoupled, init_temp = 3)
        values[f'softmax_decoupled_{decoupled}'] = loss(audio, text).detach()
    sigmoid = SigmoidContrastiveLearning(layers = 2, init_temp = 5, init_bias = -2)
    values['sigmoid'] = sigmoid(audio, text).detach()
    values['softmax_single'] = SoftmaxContrastiveLearning()(audio[0], text[0]).detach()

    embedding = torch.nn.Embedding(5, 3)
    codes = torch.tensor([[1, -1, 4, 0], [-1, -1, 2, 3]])
    embeds, mask = get_embeds(embedding, codes, return_mask = True)
    values.update(embedding_weight = embedding.weight.detach(), codes = codes, embeds = embeds.detach(), mask = mask,
                  embeds_no_fill = get_embeds(embedding, codes, mask_pad_pos_to = None).detach())
    torch.save(values, OUT)
    print(f'wrote {OUT}')


if __name__ == '__main__':
    main()
