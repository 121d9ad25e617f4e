"""Sequence ends that mean something: EOS is a training target only where a sequence ends its file
(``file_end``), padding (-1) is never a target and has no gradient, in every stage and in SoundStorm; a model
trained on crops generates to the requested length."""

import pytest
import torch

from audiolm_pytorch.lm.coarse import CoarseTransformer, CoarseTransformerWrapper
from audiolm_pytorch.lm.fine import FineTransformer, FineTransformerWrapper
from audiolm_pytorch.lm.sampling import append_eos, file_end_mask
from audiolm_pytorch.lm.semantic import SemanticTransformer, SemanticTransformerWrapper

TINY = dict(dim = 32, depth = 2, heads = 2, dim_head = 16)

# toy corpus: every file is a cycle 0 1 2 3 0 1 2 3 ... whose last token is 7 (its real end)
BODY, END, CROP, MAX_CROP = (0, 1, 2, 3), 7, 10, 24


def toy_file(length):
    return [BODY[i % len(BODY)] for i in range(length - 1)] + [END]


def toy_batch(gen, batch = 16):
    """Crops of 8 to MAX_CROP tokens (right-padded with -1) from files of 30-60 tokens: a body crop
    (file_end False) or the file's last tokens (file_end True), about one in four."""
    rows, ends = [], []
    for _ in range(batch):
        tokens = toy_file(int(torch.randint(30, 60, (), generator = gen)))
        crop = int(torch.randint(8, MAX_CROP + 1, (), generator = gen))
        at_end = bool(torch.rand((), generator = gen) < 0.25)
        start = len(tokens) - crop if at_end else int(torch.randint(0, len(tokens) - crop, (), generator = gen))
        rows.append(tokens[start:start + crop] + [-1] * (MAX_CROP - crop))
        ends.append(at_end)
    return torch.tensor(rows), torch.tensor(ends)


def crop_and_file_end_examples():
    body = torch.tensor([toy_file(40)[5:5 + CROP]])        # ends inside the file (after a body token)
    end = torch.tensor([toy_file(40)[-CROP:]])              # ends with the file's real end
    return body, end


def overfit(wrapper, inputs, steps = 120, lr = 3e-3):
    opt = torch.optim.Adam(wrapper.transformer.parameters(), lr = lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = wrapper(**inputs(gen), return_loss = True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def semantic_wrapper():
    torch.manual_seed(0)
    model = SemanticTransformer(num_semantic_tokens = 8, **TINY)
    return SemanticTransformerWrapper(transformer = model, unique_consecutive = False, mask_prob = 0.)


@pytest.mark.parametrize('use_file_end', [True, False])
def test_semantic_trained_on_crops_learns_eos_only_at_file_ends(use_file_end):
    wrapper = semantic_wrapper()

    def inputs(gen):
        ids, ends = toy_batch(gen)
        return dict(semantic_token_ids = ids, file_end = ends if use_file_end else None)

    overfit(wrapper, inputs)
    body, end = crop_and_file_end_examples()
    with torch.no_grad():
        p_crop = wrapper(semantic_token_ids = body).softmax(-1)[0, -1, wrapper.eos_id]
        p_end = wrapper(semantic_token_ids = end).softmax(-1)[0, -1, wrapper.eos_id]
    if use_file_end:
        assert p_end > 0.9 and p_crop < 0.02, (float(p_crop), float(p_end))
    else:   # every crop ending in EOS (the old behaviour): the model learns to stop wherever a crop may end
        assert p_crop > 0.05, float(p_crop)

    if use_file_end:
        # generation from a model trained on crops runs to the requested length unless it predicts a real end
        torch.manual_seed(0)
        out = wrapper.generate(max_length = MAX_CROP, prime_ids = body.expand(8, -1), temperature = 1.,
                               filter_thres = 0.)
        lengths = (out != -1).sum(dim = 1)
        for row, length in zip(out, lengths.tolist()):   # full length, or stopped after sampling a real end (7)
            assert length == MAX_CROP or (row[CROP:length] == END).any(), row.tolist()
        assert (lengths == MAX_CROP).sum() >= 4
        out = wrapper.generate(max_length = MAX_CROP, prime_ids = end.expand(4, -1), temperature = 1., filter_thres = 0.)
        assert out.shape == (4, CROP)                           # primed with a real end: it stops at once


def coarse_wrapper():
    torch.manual_seed(0)
    model = CoarseTransformer(num_semantic_tokens = 8, codebook_size = 8, num_coarse_quantizers = 2, **TINY)
    return CoarseTransformerWrapper(transformer = model, unique_consecutive = False, mask_prob = 0.)


def coarse_codes(semantic):
    """Toy codec: one frame per semantic token, levels (token, token + 1 mod 8)."""
    return torch.stack((semantic, (semantic + 1) % 8), dim = -1)


@pytest.mark.parametrize('use_file_end', [True, False])
def test_coarse_trained_on_crops_learns_eos_only_at_file_ends(use_file_end):
    wrapper = coarse_wrapper()
    t = wrapper.transformer

    def inputs(gen):
        ids, ends = toy_batch(gen)
        return dict(semantic_token_ids = ids, coarse_token_ids = coarse_codes(ids.clamp(min = 0)).masked_fill(
                        (ids < 0)[..., None], -1),
                    file_end = ends if use_file_end else None)

    overfit(wrapper, inputs)

    def eos_probs(semantic):
        sem_logits, coarse_logits = wrapper(semantic_token_ids = semantic, coarse_token_ids = coarse_codes(semantic))
        sem_eos = sem_logits.softmax(-1)[0, semantic.shape[1], t.semantic_eos_id]     # after the last semantic id
        coarse_eos = coarse_logits.softmax(-1)[0, -1, t.eos_id]                        # after the last frame
        return float(sem_eos), float(coarse_eos)

    body, end = crop_and_file_end_examples()
    with torch.no_grad():
        (sem_crop, coarse_crop), (sem_end, coarse_end) = eos_probs(body), eos_probs(end)
    if use_file_end:
        assert coarse_end > 0.9 and coarse_crop < 0.02, (coarse_crop, coarse_end)
        assert sem_end > 0.9 and sem_crop < 0.02, (sem_crop, sem_end)
        torch.manual_seed(0)
        codes = wrapper.generate(semantic_token_ids = body.expand(8, -1), max_time_steps = CROP, filter_thres = 0.)
        for row in codes:    # the semantic ids hold no end: full length unless a real-end frame (7) was sampled
            assert (row[:, 0] != -1).all() or (row[:, 0] == END).any(), row.tolist()
    else:   # every crop ending in EOS (the old behaviour): EOS wherever a crop may end
        assert coarse_crop > 0.05, coarse_crop


def test_file_false_gives_no_eos_target_and_true_one_eos_per_row():
    wrapper = semantic_wrapper()
    ids = torch.tensor([[1, 2, 3, -1], [4, 5, 6, 2]])
    logits = wrapper(semantic_token_ids = ids).detach()
    nll = -logits.log_softmax(-1)

    def expected(targets):
        picked = [nll[b, i, v] for b, row in enumerate(targets) for i, v in enumerate(row) if v >= 0]
        return torch.stack(picked).mean()

    eos = wrapper.eos_id
    both = [[1, 2, 3, eos, -1], [4, 5, 6, 2, eos]]
    cases = {None: both, True: both, torch.tensor([True, False]): [[1, 2, 3, eos, -1], [4, 5, 6, 2, -1]],
             False: [[1, 2, 3, -1, -1], [4, 5, 6, 2, -1]]}
    for file_end, targets in cases.items():
        loss = wrapper(semantic_token_ids = ids, file_end = file_end, return_loss = True)
        assert torch.allclose(loss, expected(targets), atol = 1e-5), file_end

    # coarse: no semantic EOS target and no coarse EOS target with file_end False
    cw = coarse_wrapper()
    t = cw.transformer
    sem, codes = torch.tensor([[1, 2, 3]]), torch.tensor([[[1, 2], [3, 4]]])
    sem_logits, coarse_logits = cw(semantic_token_ids = sem, coarse_token_ids = codes)
    sem_nll, coarse_nll = -sem_logits.detach().log_softmax(-1)[0], -coarse_logits.detach().log_softmax(-1)[0]
    crop = torch.cat((sem_nll[[0, 1, 2], [1, 2, 3]], coarse_nll[[0, 1, 2, 3], [1, 2, 3, 4]]))
    with_eos = torch.cat((crop, sem_nll[3, t.semantic_eos_id][None], coarse_nll[4, t.eos_id][None]))
    assert torch.allclose(cw(semantic_token_ids = sem, coarse_token_ids = codes, file_end = False, return_loss = True),
                          crop.mean(), atol = 1e-5)
    assert torch.allclose(cw(semantic_token_ids = sem, coarse_token_ids = codes, return_loss = True),
                          with_eos.mean(), atol = 1e-5)


def test_file_end_is_checked():
    wrapper = semantic_wrapper()
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    for bad in (torch.tensor([True]), torch.tensor([0.5, 1.]), torch.tensor([2, 0]), 'yes'):
        with pytest.raises(ValueError, match = 'file_end'):
            wrapper(semantic_token_ids = ids, file_end = bad, return_loss = True)
    assert file_end_mask(torch.tensor(True), 3, 'cpu').tolist() == [True] * 3
    assert file_end_mask(torch.tensor([1, 0]), 2, 'cpu').tolist() == [True, False]
    assert append_eos(torch.tensor([[1, -1], [2, 3]]), 9, where = torch.tensor([False, True])).tolist() == \
        [[1, -1, -1], [2, 3, 9]]


# ---- padding: zero loss and zero gradient ----------------------------------------------------------------

def embedding_grads(module_with_embedding, run):
    """Run ``run()`` (a loss) and return the gradients of every output of ``module_with_embedding`` (a list, one
    per call) — the gradient reaching each input position."""
    outputs = []

    def hook(_, __, out):
        out.retain_grad()
        outputs.append(out)

    handle = module_with_embedding.register_forward_hook(hook)
    try:
        loss = run()
        loss.backward()
    finally:
        handle.remove()
    return loss, [out.grad for out in outputs]


def param_grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def assert_same_loss_and_grads(model, run_a, run_b):
    model.zero_grad()
    loss_a = run_a()
    loss_a.backward()
    grads_a = param_grads(model)
    model.zero_grad()
    loss_b = run_b()
    loss_b.backward()
    assert torch.allclose(loss_a, loss_b, atol = 1e-6), (float(loss_a), float(loss_b))
    for a, b in zip(grads_a, param_grads(model)):
        assert torch.allclose(a, b, atol = 1e-6)


@pytest.mark.parametrize('file_end', [True, False])
def test_semantic_padding_is_no_target_and_has_no_gradient(file_end):
    wrapper = semantic_wrapper()
    ids = torch.tensor([[1, 2, 3, -1, -1, -1], [4, 5, 6, 2, 1, 0]])
    _, (grad,) = embedding_grads(wrapper.transformer.semantic_embedding,
                                 lambda: wrapper(semantic_token_ids = ids, file_end = file_end, return_loss = True))
    per_position = grad.abs().sum(-1)
    # the last real id has a target after it only at a file end (EOS); everything after it has none
    last = 3 if file_end else 2
    assert (per_position[0, last:] == 0).all() and (per_position[0, :last] > 0).all()
    # a fully padded item and extra padding columns change neither the loss nor a single gradient
    real = ids[1:]
    assert_same_loss_and_grads(
        wrapper.transformer, lambda: wrapper(semantic_token_ids = real, file_end = file_end, return_loss = True),
        lambda: wrapper(semantic_token_ids = torch.cat((torch.cat((real, torch.full((1, 3), -1)), 1),
                                                        torch.full((1, 9), -1))),
                        file_end = torch.tensor([file_end, True]), return_loss = True))


@pytest.mark.parametrize('file_end', [True, False])
def test_coarse_padding_is_no_target_and_has_no_gradient(file_end):
    cw = coarse_wrapper()
    sem = torch.tensor([[1, 2, 3, 4], [5, 6, -1, -1]])
    codes = torch.tensor([[[1, 2], [3, 4], [5, 6]], [[1, 1], [-1, -1], [-1, -1]]])
    _, (sem_grad,) = embedding_grads(cw.transformer.semantic_embedding, lambda: cw(
        semantic_token_ids = sem, coarse_token_ids = codes, file_end = file_end, return_loss = True))
    sem_grad = sem_grad.abs().sum(-1)              # (b, s + 1): ids then the closing EOS
    assert (sem_grad[1, 3:] == 0).all() and (sem_grad[1, :3] > 0).all()
    _, (coarse_grad,) = embedding_grads(cw.transformer.coarse_embedding, lambda: cw(
        semantic_token_ids = sem, coarse_token_ids = codes, file_end = file_end, return_loss = True))
    coarse_grad = coarse_grad.abs().sum(-1)        # (b, frames * 2) flat inputs
    last = 2 if file_end else 1                    # the last real code predicts EOS only at a file end
    assert (coarse_grad[1, last:] == 0).all() and (coarse_grad[1, :last] > 0).all()

    real_sem, real_codes = sem[:1], codes[:1]
    pad_sem = torch.cat((torch.cat((real_sem, torch.full((1, 2), -1)), 1), torch.full((1, 6), -1)))
    pad_codes = torch.cat((torch.cat((real_codes, torch.full((1, 2, 2), -1)), 1), torch.full((1, 5, 2), -1)))
    assert_same_loss_and_grads(
        cw.transformer,
        lambda: cw(semantic_token_ids = real_sem, coarse_token_ids = real_codes, file_end = file_end, return_loss = True),
        lambda: cw(semantic_token_ids = pad_sem, coarse_token_ids = pad_codes,
                   file_end = torch.tensor([file_end, True]), return_loss = True))


def test_fine_padding_is_no_target_and_has_no_gradient():
    torch.manual_seed(0)
    model = FineTransformer(num_coarse_quantizers = 2, num_fine_quantizers = 2, codebook_size = 8, **TINY)
    fw = FineTransformerWrapper(transformer = model, mask_prob = 0.)
    codes = torch.randint(0, 8, (2, 4, 4))
    codes[1, 2:] = -1
    _, grads = embedding_grads(model.embedding, lambda: fw(token_ids = codes, file_end = False, return_loss = True))
    fine_grad, coarse_grad = (g.abs().sum(-1) for g in grads)      # fine inputs (b, 7), coarse prefix (b, 8)
    assert (coarse_grad[1, 4:] == 0).all() and (coarse_grad[1, :4] > 0).all()
    assert (fine_grad[1, 3:] == 0).all() and (fine_grad[1, :3] > 0).all()    # the last real one predicts padding
    real = codes[:1]
    padded = torch.cat((torch.cat((real, torch.full((1, 3, 4), -1)), 1), torch.full((1, 7, 4), -1)))
    assert_same_loss_and_grads(model, lambda: fw(token_ids = real, return_loss = True),
                               lambda: fw(token_ids = padded, file_end = torch.tensor([True, False]), return_loss = True))
    with pytest.raises(ValueError, match = 'file_end'):
        fw(token_ids = codes, file_end = torch.tensor([True]), return_loss = True)


def test_soundstorm_padding_is_no_target_and_has_no_gradient():
    from tests.helpers import tiny_soundstorm
    torch.manual_seed(0)
    model = tiny_soundstorm()
    q = model.net.num_effective_quantizers
    codes = torch.randint(0, model.net.codebook_size, (2, 10, q))
    codes[1, 6:] = -1                                             # collate_pad's padding of a shorter item
    for seed in range(4):                                        # several random levels / masks / prompts
        torch.manual_seed(seed)
        _, (grad,) = embedding_grads(model.net.code_embeds, lambda: model(
            codes, file_end = torch.tensor([True, False]), return_loss_breakdown = False))
        per_frame = grad.abs().sum((-1, -2))                     # (b, n, levels, d) -> (b, n)
        assert (per_frame[1, 6:] == 0).all() and (per_frame[1, :6] > 0).any()
    torch.manual_seed(0)
    loss = model(codes, return_loss_breakdown = False)
    mask = torch.ones(2, 10, dtype = torch.bool)
    mask[1, 6:] = False
    torch.manual_seed(0)
    assert torch.equal(loss, model(codes.clamp(min = 0), mask = mask, return_loss_breakdown = False))
    with pytest.raises(ValueError, match = 'file_end'):
        model(codes, file_end = torch.tensor([1.5, 0.]))
