"""HuBERT + k-means semantic tokens from local files (nothing is downloaded).

    python examples/hubert_kmeans_local.py --hubert hubert_base_ls960.pt --kmeans hubert_base_ls960_L9_km500.bin
    python examples/hubert_kmeans_local.py --hubert my_hubert_dir/ [--layer 9] [--clusters 500]
    python examples/hubert_kmeans_local.py          # offline smoke run: a tiny random HuBERT in a temp folder

--hubert: a fairseq HuBERT / wav2vec 2.0 checkpoint (.pt, read without fairseq) or a transformers model directory
(save_pretrained output; e.g. downloaded once with `huggingface-cli download facebook/hubert-base-ls960 --local-dir
DIR`). --kmeans: a scikit-learn joblib dump (read by a restricted unpickler that runs no code from the file),
.npy or .safetensors centroids; without it, k-means is fitted on the audio (`audiolm fit-kmeans` does the same).
Then the tokenizer drives a few SemanticTransformer training steps, as in train_semantic.py.
"""

from pathlib import Path

from _common import ASSETS, QUICK, TINY_TRANSFORMER, model_dir_or_tiny, parse_local_model_args, parser
from audiolm_pytorch import HubertWithKmeans, SemanticTransformer, SemanticTransformerTrainer, fit_kmeans, load_audio

p = parser(__doc__.splitlines()[0])
p.add_argument('--hubert', default = None, help = 'fairseq .pt or transformers directory (default: a tiny random model)')
p.add_argument('--kmeans', default = None, help = 'k-means file (default: fit one on --data)')
p.add_argument('--layer', type = int, default = None, help = 'output layer (default: 9, or 2 for the tiny model)')
p.add_argument('--clusters', type = int, default = 64, help = 'clusters when fitting k-means (default: 64)')
args, out, data = parse_local_model_args(p, steps = 20)


def tiny_random_hubert(folder: Path) -> Path:
    """A 2-layer HuBERT with random weights in transformers' format (same 320-sample hop as HuBERT base)."""
    from transformers import HubertConfig, HubertModel
    config = HubertConfig(hidden_size = 32, num_hidden_layers = 2, num_attention_heads = 2, intermediate_size = 64,
                          conv_dim = (16,) * 7, num_conv_pos_embeddings = 16, num_conv_pos_embedding_groups = 2)
    HubertModel(config).save_pretrained(folder)
    return folder


hubert = model_dir_or_tiny(args.hubert, tiny_random_hubert, flag = 'hubert', what = 'HuBERT',
                           caveat = 'tokens are meaningless')
layer = args.layer or (9 if args.hubert else 2)

kmeans = args.kmeans
if kmeans is None:
    result = fit_kmeans(str(hubert), data = data, clusters = args.clusters, output_layer = layer,
                        out = out / 'hubert_kmeans.safetensors', epochs = 10)
    kmeans = result.path
    print(f'fitted {args.clusters} centroids on {result.num_frames} frames of layer {layer} -> {kmeans}')

wav2vec = HubertWithKmeans(checkpoint_path = hubert, kmeans_path = kmeans, output_layer = layer)
wave = load_audio(ASSETS / 'speech_0_16k.wav', target_sample_hz = wav2vec.target_sample_hz).wave
ids = wav2vec(wave)
print(f'{wave.shape[-1] / wav2vec.target_sample_hz:.2f} s -> {ids.shape[-1]} semantic ids '
      f'({wav2vec.downsample_factor} samples per token): {ids[0, :16].tolist()} ...')

semantic = SemanticTransformer(num_semantic_tokens = wav2vec.codebook_size, **TINY_TRANSFORMER)
trainer = SemanticTransformerTrainer(semantic, wav2vec, folder = data, batch_size = 2, data_max_length_seconds = 2.,
                                     num_train_steps = args.steps, lr = 1e-3,
                                     results_folder = out / 'results' / 'semantic_hubert', **QUICK)
trainer.train()
print('semantic loss history:', [round(v, 3) for _, v in trainer.loss_history['loss']][::max(1, args.steps // 10)])
