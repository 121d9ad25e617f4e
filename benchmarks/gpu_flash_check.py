"""Check that the language models' attention runs on the flash kernel: every SDPA call is made with
``sdpa_kernel(FLASH_ATTENTION)`` only, so a call the flash kernel refuses (an ``attn_mask``, unequal head widths,
fp32 on CUDA) raises instead of silently falling back. Covers training with padding + forgetful causal masking
+ classifier-free dropout of a padded text condition (cross-attention and self-attention prefix), guided kv-cache
decoding, and a padded SoundStorm Conformer.

    python benchmarks/gpu_flash_check.py [--device cuda]

On CPU the check is weaker (PyTorch's CPU flash kernel also takes masks); tests/test_flash_eligibility.py
checks CUDA's rules on CPU by recording the calls.
"""

from __future__ import annotations

import argparse

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def check(name, fn):
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            fn()
    except RuntimeError as error:
        print(f'FAIL  {name}: {str(error).splitlines()[0][:200]}')
        return False
    print(f'ok    {name}')
    return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--device', default = 'cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16
    torch.manual_seed(0)

    from audiolm_pytorch import ConformerWrapper, SemanticTransformer, SemanticTransformerWrapper, SoundStorm

    def semantic_case(prefix):
        model = SemanticTransformer(num_semantic_tokens = 500, dim = 256, depth = 2, has_condition = True,
                                    cond_dim = 64, cond_as_self_attn_prefix = prefix).to(device)
        wrapper = SemanticTransformerWrapper(transformer = model, mask_prob = 0.15).train()
        ids = torch.randint(0, 500, (4, 256), device = device)
        ids[1, 200:] = -1                                             # padding
        text = torch.randn(4, 12, 64, device = device)
        text[2, 6:] = 0.                                              # padded condition

        def train_and_decode():
            with torch.autocast(device.type, dtype = dtype):
                wrapper(semantic_token_ids = ids, text_embeds = text, return_loss = True).backward()
                wrapper.generate(max_length = 24, text_embeds = text, cond_scale = 3., prime_ids = ids[:1, :8].expand(4, -1))
        return train_and_decode

    def soundstorm_case():
        net = ConformerWrapper(codebook_size = 1024, num_quantizers = 4, conformer = dict(dim = 256, depth = 2))
        model = SoundStorm(net, num_semantic_token_ids = 500).to(device)
        codes = torch.randint(0, 1024, (2, 100, 4), device = device)
        semantic = torch.randint(0, 500, (2, 100), device = device)
        mask = torch.ones(2, 100, dtype = torch.bool, device = device)
        mask[1, 70:] = False

        def train_and_generate():
            with torch.autocast(device.type, dtype = dtype):
                loss, _ = model(codes, cond_semantic_token_ids = semantic, mask = mask)
                loss.backward()
                model.generate(cond_semantic_token_ids = semantic, mask = mask, steps = 2)
        return train_and_generate

    results = [check('semantic: cross-attention condition, train + guided decode', semantic_case(False)),
               check('semantic: self-attention prefix condition, train + guided decode', semantic_case(True)),
               check('soundstorm: padded conformer, train + generate', soundstorm_case())]
    print(f'{sum(results)}/{len(results)} on the flash kernel [{device}, '
          f'{torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}, torch {torch.__version__}]')
    raise SystemExit(0 if all(results) else 1)


if __name__ == '__main__':
    main()
