"""The ``audiolm`` command line (also ``python -m audiolm_pytorch.cli``, and
``accelerate launch -m audiolm_pytorch.cli train ...`` for several GPUs).

Subcommands::

    audiolm demo [--out DIR] [--minutes N]              train every stage on the shipped clips, then generate
    audiolm train soundstream|semantic|coarse|fine --data DIR [--config FILE] [--set key=value ...] [--results DIR]
    audiolm tokenize --codec CODEC IN... --out DIR [--format npy|safetensors] [--num-quantizers K]
    audiolm prepare IN... --out DIR [--wav2vec TOK] [--codec CODEC] [--config FILE] [--shard-size N]
                                                        token shards for training (``audiolm_pytorch.tokens``)
    audiolm decode --codec CODEC CODES out.wav          codes written by ``tokenize`` back to audio
    audiolm reconstruct --codec CODEC in.wav out.wav [--num-quantizers K]
    audiolm generate --audiolm CONFIG [--prime in.wav] [--text "..."] --out out.wav [--max-length N]
    audiolm fit-kmeans --tokenizer spectral|PATH --data DIR --clusters K --out FILE

Exit codes: 0 success; 1 runtime failure (missing file, unreadable audio, incompatible checkpoint), reported
as one line on stderr (``--debug`` adds the traceback); 2 usage error (bad arguments, malformed config).

Config files (YAML or JSON; ``--set section.key=value`` overrides any entry; both read with the YAML 1.2
core schema: `no`, `off`, `1:30`, `2024-01-01` stay strings, `1e-4` and `1.5e4` are floats)
--------------------------------------------------------------------------------------------------------
``train`` configs have up to four sections (see ``examples/configs/*.yaml``)::

    model:    # keyword arguments of the stage model (SoundStream / SemanticTransformer / CoarseTransformer /
              # FineTransformer). Token counts the tokenizers determine (num_semantic_tokens, codebook_size,
              # rq_groups) are filled in from them when absent.
    trainer:  # keyword arguments of the stage trainer (num_train_steps, batch_size, lr, data_max_length_seconds,
              # save_model_every, accelerate_kwargs, ...). folder / results_folder come from --data / --results.
    codec:    # coarse and fine: a SoundStream checkpoint path, a transformers EnCodec / DAC / Mimi directory, or
              # {kind: soundstream|encodec|dac|mimi, path: P, ...extra wrapper kwargs such as bandwidth}
    wav2vec:  # semantic and coarse: a SpectralKmeansTokenizer checkpoint path, or
              # {kind: spectral, path: FILE} | {kind: hubert|w2vbert, checkpoint_path: P, kmeans_path: K,
              #  output_layer: 9, ...} | {kind: vq-wav2vec, checkpoint_path: P}

``generate --audiolm CONFIG`` reads::

    codec: ...            # as above
    wav2vec: ...          # as above (needed to prime with audio)
    semantic: semantic.pt # checkpoints of the three transformers (rebuilt with init_and_load_from)
    coarse: coarse.pt
    fine: fine.pt

The loaders behind these sections (``load_config``, ``load_codec``, ``load_semantic_tokenizer``) live in
``audiolm_pytorch.cli_config``. A relative path inside a config file is taken relative to that file's folder
when the file exists there (so ``audiolm demo``'s ``audiolm.yaml`` works from anywhere), and relative to the
working directory otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from audiolm_pytorch.cli_config import GENERATE_KEYS, ConfigError, load_codec, load_config
from audiolm_pytorch.codes_file import (check_codes_fit_codec, decode_codes, read_codes, tokenize_file, unique_stem,
                                        write_codes)
from audiolm_pytorch.stages import STAGES, TRAIN_SECTIONS, build_audiolm, build_trainer

# re-exported: their former home (tests and scripts import them from here)
__all__ = ['main', 'build_parser', 'build_trainer', 'build_audiolm', 'read_codes', 'GENERATE_KEYS', 'TRAIN_SECTIONS',
           'STAGES', 'EXIT_OK', 'EXIT_FAILURE', 'EXIT_USAGE']

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

# ------------------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------------------

def cmd_train(args) -> int:
    config = load_config(args.config, args.overrides)
    trainer = build_trainer(args.stage, config, data = args.data, results = args.results, cpu = args.cpu,
                            progress = not args.no_progress)
    if args.resume:
        trainer.load(args.resume)
        trainer.print(f'resumed from {args.resume} at step {trainer.steps}')
    trainer.train()
    last = trainer.steps - 1
    final = trainer.results_folder / f'{trainer.checkpoint_name}.{last}.pt'
    if last >= 0 and not final.exists():
        trainer.save(final)
    trainer.print(f'final checkpoint: {final}')
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------
# tokenize / decode / reconstruct
# ------------------------------------------------------------------------------------------------------------

def _device(name: str | None):
    import torch
    return torch.device(name or ('cuda' if torch.cuda.is_available() else 'cpu'))


def _input_files(inputs) -> list[Path]:
    from audiolm_pytorch.audio import AUDIO_EXTENSIONS
    from audiolm_pytorch.data import find_audio_files
    files = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f'input not found: {path}')
        found = find_audio_files(path) if path.is_dir() else [path]
        if not found:
            raise ValueError(f'no audio files ({", ".join(AUDIO_EXTENSIONS)}) found under {path}')
        files.extend(found)
    return files


def cmd_tokenize(args) -> int:
    from tqdm.auto import tqdm
    device = _device(args.device)
    codec = load_codec(args.codec).to(device)
    files = _input_files(args.inputs)
    out_dir = Path(args.out)
    out_dir.mkdir(parents = True, exist_ok = True)
    used = set()
    for path in tqdm(files, desc = 'tokenize', disable = args.no_progress or len(files) < 2):
        codes = tokenize_file(codec, path, args.num_quantizers, device)[0].cpu().long()   # (frames, q)
        target = write_codes(out_dir / f'{unique_stem(path, used)}.{args.format}', codes, codec = codec, source = path)
        print(f'{path} -> {target} ({codes.shape[0]} frames x {codes.shape[1]} quantizers)')
    return EXIT_OK


def cmd_decode(args) -> int:
    from audiolm_pytorch.audio import save_audio
    device = _device(args.device)
    codec = load_codec(args.codec).to(device)
    codes, metadata = read_codes(args.codes, return_metadata = True)
    check_codes_fit_codec(codec, codes, metadata, args.codes)
    wave = decode_codes(codec, codes.to(device))
    save_audio(args.output, wave, codec.target_sample_hz)
    print(f'{args.codes} -> {args.output} ({wave.numel() / codec.target_sample_hz:.2f} s at {codec.target_sample_hz} Hz)')
    return EXIT_OK


def cmd_reconstruct(args) -> int:
    from audiolm_pytorch.audio import save_audio
    device = _device(args.device)
    codec = load_codec(args.codec).to(device)
    codes = tokenize_file(codec, Path(args.input), args.num_quantizers, device)
    wave = decode_codes(codec, codes)
    save_audio(args.output, wave, codec.target_sample_hz)
    print(f'{args.input} -> {args.output} ({codes.shape[1]} frames x {codes.shape[2]} quantizers, '
          f'{wave.numel() / codec.target_sample_hz:.2f} s at {codec.target_sample_hz} Hz)')
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------
# generate / fit-kmeans / demo
# ------------------------------------------------------------------------------------------------------------

def cmd_generate(args) -> int:
    import torch
    from audiolm_pytorch.audio import load_audio, save_audio
    config = load_config(args.audiolm, args.overrides)
    device = _device(args.device)
    audiolm = build_audiolm(config).to(device)
    if args.seed is not None:
        torch.manual_seed(args.seed)
    conditioned = any(getattr(audiolm, f'{s}_has_condition') for s in ('semantic', 'coarse', 'fine'))
    if args.text is not None and not conditioned:
        raise ValueError('--text was given but none of the transformers was trained with text conditioning '
                         '(has_condition=False)')
    kwargs = dict(batch_size = args.batch_size, max_length = args.max_length, temperature = args.temperature,
                  filter_thres = args.filter_thres, cond_scale = args.cond_scale)
    if args.max_coarse_steps is not None:
        kwargs['max_coarse_time_steps'] = args.max_coarse_steps
    if args.text is not None:
        kwargs['text'] = [args.text] * args.batch_size
    if args.prime is not None:
        prime = load_audio(args.prime)
        kwargs.update(prime_wave = prime.wave.to(device), prime_wave_input_sample_hz = prime.sample_hz)
    with torch.no_grad():
        output = audiolm(**kwargs)
    waves = list(output) if isinstance(output, (list, tuple)) else list(output.reshape(output.shape[0], -1))
    out = Path(args.out)
    rate = audiolm.codec.target_sample_hz
    for index, wave in enumerate(waves):
        target = out if len(waves) == 1 else out.with_name(f'{out.stem}_{index}{out.suffix}')
        save_audio(target, wave.reshape(-1).float().cpu(), rate)
        print(f'wrote {target} ({wave.numel() / rate:.2f} s at {rate} Hz)')
    return EXIT_OK


def cmd_fit_kmeans(args) -> int:
    from audiolm_pytorch.semantic.kmeans_fit import fit_kmeans
    tokenizer = args.tokenizer
    if tokenizer != 'spectral' and not Path(tokenizer).exists():
        raise FileNotFoundError(f'tokenizer not found: {tokenizer} (pass "spectral", a fairseq .pt or a '
                                'transformers model directory)')
    if not Path(args.data).exists():
        raise FileNotFoundError(f'--data not found: {args.data}')
    out = Path(args.out)
    if tokenizer == 'spectral' and out.suffix not in ('.pt', '.safetensors'):
        raise ConfigError(f'--out for a spectral tokenizer must end in .pt or .safetensors, got {out}')
    if tokenizer != 'spectral' and out.suffix != '.safetensors':
        raise ConfigError(f'--out for k-means centroids must end in .safetensors, got {out}')
    result = fit_kmeans(tokenizer, data = args.data, clusters = args.clusters, out = out,
                        output_layer = args.output_layer, max_frames = args.max_frames, epochs = args.epochs,
                        seed = args.seed, device = args.device, max_files = args.max_files)
    print(f'fitted {args.clusters} clusters on {result.num_frames} frames (inertia {result.inertia:.4f}) -> {result.path}')
    return EXIT_OK


def cmd_demo(args) -> int:
    from audiolm_pytorch.demo import run_demo
    run_demo(args.out, args.minutes, seed = args.seed, cpu = args.cpu, progress = not args.no_progress)
    return EXIT_OK


# ------------------------------------------------------------------------------------------------------------
# parser and entry point
# ------------------------------------------------------------------------------------------------------------

def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f'must be positive, got {text}')
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {text}')
    return value


def add_prepare_parser(add) -> None:
    """The ``prepare`` subcommand's arguments (``add(name, help, epilog=...)`` makes a subparser)."""
    p = add('prepare', 'tokenize an audio corpus once into token shards (semantic ids + codec codes) for training',
            epilog = 'The stage trainers read the shards with tokens=OUT (no tokenizer or codec loaded). Resumable: '
                     'rerun the same command\nafter an interruption. Several processes: accelerate launch -m '
                     'audiolm_pytorch.cli prepare ... (disjoint shards per process).\n'
                     'example: audiolm prepare wavs/ --out tokens/ --wav2vec tok.pt --codec soundstream.pt')
    p.add_argument('inputs', nargs = '+', metavar = 'IN', help = 'audio files or folders (searched recursively)')
    p.add_argument('--out', required = True, help = 'token folder (created, or resumed)')
    p.add_argument('--codec', default = None, help = 'codec: SoundStream checkpoint or transformers EnCodec / DAC / Mimi directory')
    p.add_argument('--wav2vec', default = None, help = 'semantic tokenizer: SpectralKmeansTokenizer checkpoint '
                   '(HuBERT / w2v-BERT: a wav2vec: section in --config)')
    p.add_argument('--config', default = None, help = 'YAML / JSON file with codec: / wav2vec: sections (as in train)')
    p.add_argument('--set', dest = 'overrides', nargs = '+', default = [], metavar = 'KEY=VALUE',
                   help = 'dotted overrides, e.g. wav2vec.output_layer=9')
    p.add_argument('--shard-size', type = int, default = 256, help = 'input files per shard (default: 256)')
    p.add_argument('--device', default = None, help = 'torch device (default: cuda when available, else cpu)')
    p.add_argument('--no-progress', action = 'store_true', help = 'hide the progress bar')
    p.set_defaults(handler = cmd_prepare)


def cmd_prepare(args) -> int:
    from audiolm_pytorch.tokens_writer import cmd_prepare as run   # the logic lives beside the format
    return run(args)


def build_parser() -> argparse.ArgumentParser:
    from audiolm_pytorch.version import __version__
    common = argparse.ArgumentParser(add_help = False)
    common.add_argument('--debug', action = 'store_true', default = argparse.SUPPRESS,
                        help = 'show the full traceback when a command fails')
    fmt = argparse.RawDescriptionHelpFormatter

    parser = argparse.ArgumentParser(
        prog = 'audiolm', parents = [common], formatter_class = fmt,
        description = 'AudioLM family in PyTorch: train codecs, tokenizers and the semantic / coarse / fine '
                      'transformers, tokenize and generate audio.',
        epilog = 'Start with `audiolm demo --out demo_out` (about 5 minutes on a laptop CPU).\n'
                 'Exit codes: 0 ok, 1 runtime failure, 2 usage error. `audiolm COMMAND --help` for details.')
    parser.add_argument('--version', action = 'version', version = f'audiolm_pytorch {__version__}')
    sub = parser.add_subparsers(dest = 'command', metavar = 'COMMAND', required = True)

    def add(name, help, description = None, epilog = None):
        return sub.add_parser(name, help = help, description = description or help, epilog = epilog,
                              parents = [common], formatter_class = fmt)

    def add_device(p):
        p.add_argument('--device', default = None, help = 'torch device (default: cuda when available, else cpu)')

    p = add('demo', 'train every stage on the shipped clips within a time budget, then generate',
            epilog = 'Writes prompt.wav, continuation.wav, unconditional.wav, demo.png, report.md, checkpoints/ and '
                     'audiolm.yaml\n(for `audiolm generate --audiolm OUT/audiolm.yaml`). Uses the GPU when there '
                     'is one.')
    p.add_argument('--out', default = 'demo_out', help = 'output folder (default: demo_out)')
    p.add_argument('--minutes', type = _positive_float, default = 5., help = 'wall-clock budget (default: 5)')
    p.add_argument('--seed', type = int, default = 0, help = 'random seed (default: 0)')
    p.add_argument('--cpu', action = 'store_true', help = 'use the CPU even when a GPU is available')
    p.add_argument('--no-progress', action = 'store_true', help = 'hide progress bars')
    p.set_defaults(handler = cmd_demo)

    p = add('train', 'train one stage (soundstream, semantic, coarse or fine) on a folder of audio',
            epilog = 'Config sections: model, trainer, codec (coarse/fine), wav2vec (semantic/coarse); see '
                     'examples/configs/*.yaml.\nexample: audiolm train soundstream --data wavs/ --config '
                     'soundstream.yaml --set trainer.num_train_steps=1000 model.codebook_size=512\n'
                     'several GPUs: accelerate launch -m audiolm_pytorch.cli train coarse --data wavs/ --config '
                     'coarse.yaml')
    p.add_argument('stage', choices = STAGES, help = 'which model to train')
    p.add_argument('--data', required = True, help = 'folder of audio files (searched recursively), or a token '
                   'folder written by `audiolm prepare` (semantic / coarse / fine: no tokenizer or codec needed)')
    p.add_argument('--config', default = None, help = 'YAML / JSON config file')
    p.add_argument('--set', dest = 'overrides', nargs = '+', default = [], metavar = 'KEY=VALUE',
                   help = 'dotted overrides, e.g. trainer.num_train_steps=100 model.dim=256')
    p.add_argument('--results', default = None, help = 'results folder (default: trainer.results_folder or ./results)')
    p.add_argument('--resume', default = None, help = 'trainer checkpoint to resume from')
    p.add_argument('--cpu', action = 'store_true', help = 'train on the CPU even when a GPU is available')
    p.add_argument('--no-progress', action = 'store_true', help = 'hide the progress bar')
    p.set_defaults(handler = cmd_train)

    codec_help = 'SoundStream checkpoint file, or a transformers EnCodec / DAC / Mimi model directory'
    p = add('tokenize', 'encode audio files to codec codes (.npy or .safetensors, one file per input)',
            epilog = 'Each output holds an integer array (frames, quantizers). `audiolm decode` turns it back into audio.')
    p.add_argument('--codec', required = True, help = codec_help)
    p.add_argument('inputs', nargs = '+', metavar = 'IN', help = 'audio files or folders')
    p.add_argument('--out', required = True, help = 'output folder')
    p.add_argument('--format', choices = ('npy', 'safetensors'), default = 'npy', help = 'output format (default: npy)')
    p.add_argument('--num-quantizers', type = _positive_int, default = None, help = 'keep the first K levels')
    p.add_argument('--no-progress', action = 'store_true', help = 'hide the progress bar')
    add_device(p)
    p.set_defaults(handler = cmd_tokenize)

    add_prepare_parser(add)

    p = add('decode', 'decode codes written by `audiolm tokenize` back to audio')
    p.add_argument('--codec', required = True, help = codec_help)
    p.add_argument('codes', help = '.npy or .safetensors codes file')
    p.add_argument('output', help = 'output audio file (.wav, .flac, ...)')
    add_device(p)
    p.set_defaults(handler = cmd_decode)

    p = add('reconstruct', 'encode and decode an audio file through a codec')
    p.add_argument('--codec', required = True, help = codec_help)
    p.add_argument('input', help = 'input audio file')
    p.add_argument('output', help = 'output audio file (.wav, .flac, ...)')
    p.add_argument('--num-quantizers', type = _positive_int, default = None, help = 'use the first K levels only')
    add_device(p)
    p.set_defaults(handler = cmd_reconstruct)

    p = add('generate', 'generate audio with AudioLM from stage checkpoints',
            epilog = 'The config names codec, wav2vec, semantic, coarse and fine (see `audiolm --help` of the '
                     'module docstring;\n`audiolm demo` writes one to OUT/audiolm.yaml).')
    p.add_argument('--audiolm', required = True, help = 'YAML / JSON config naming the checkpoints')
    p.add_argument('--set', dest = 'overrides', nargs = '+', default = [], metavar = 'KEY=VALUE',
                   help = 'overrides of the config, e.g. fine=other/fine.pt')
    p.add_argument('--prime', default = None, help = 'audio file to continue')
    p.add_argument('--text', default = None, help = 'text condition (transformers trained with has_condition)')
    p.add_argument('--out', required = True, help = 'output audio file (with --batch-size B: OUT_0 ... OUT_{B-1})')
    p.add_argument('--max-length', type = _positive_int, default = 512,
                   help = 'semantic tokens to generate, prime included (default: 512)')
    p.add_argument('--max-coarse-steps', type = _positive_int, default = None,
                   help = 'codec frames at most (default: from --max-length)')
    p.add_argument('--batch-size', type = _positive_int, default = 1)
    per_stage = '(default: each stage its own, lm.sampling.STAGE_SAMPLING_DEFAULTS: {})'
    p.add_argument('--temperature', type = float, default = None,
                   help = per_stage.format('semantic 1.0, coarse 0.95, fine 0.4'))
    p.add_argument('--filter-thres', type = float, default = None,
                   help = 'top-k filter threshold ' + per_stage.format('0.9'))
    p.add_argument('--cond-scale', type = float, default = None,
                   help = 'classifier-free guidance scale ' + per_stage.format('3'))
    p.add_argument('--seed', type = int, default = None)
    add_device(p)
    p.set_defaults(handler = cmd_generate)

    p = add('fit-kmeans', 'fit k-means centroids for a semantic tokenizer on a folder of audio',
            epilog = 'examples:\n  audiolm fit-kmeans --tokenizer spectral --data wavs/ --clusters 64 --out tok.pt\n'
                     '  audiolm fit-kmeans --tokenizer hubert_base_ls960.pt --data wavs/ --clusters 500 '
                     '--out km.safetensors')
    p.add_argument('--tokenizer', required = True,
                   help = '"spectral" (writes a whole SpectralKmeansTokenizer), a fairseq HuBERT / wav2vec 2.0 .pt, '
                          'or a transformers model directory')
    p.add_argument('--data', required = True, help = 'folder (searched recursively) or audio file')
    p.add_argument('--clusters', type = _positive_int, required = True, help = 'number of centroids')
    p.add_argument('--out', required = True, help = '.safetensors for centroids; .pt or .safetensors for spectral')
    p.add_argument('--output-layer', type = _positive_int, default = 9, help = 'encoder layer (default: 9)')
    p.add_argument('--max-frames', type = _positive_int, default = 1_000_000)
    p.add_argument('--max-files', type = _positive_int, default = None)
    p.add_argument('--epochs', type = _positive_float, default = 20.)
    p.add_argument('--seed', type = int, default = 0)
    add_device(p)
    p.set_defaults(handler = cmd_fit_kmeans)
    return parser


def _one_line(error: BaseException) -> str:
    text = ' '.join(str(error).split()) or type(error).__name__
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in text:
        text = f'{text}: {error.filename}'
    return text


def _show_library_logs(level: int):
    """Print this library's log records on stderr (the command line's own handler on the package logger; the
    root logger and other libraries' logging are left as the caller configured them)."""
    package_logger = logging.getLogger('audiolm_pytorch')
    if not any(getattr(h, '_audiolm_cli', False) for h in package_logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
        handler._audiolm_cli = True
        package_logger.addHandler(handler)
    package_logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``audiolm`` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, 'debug', False)
    prog = f'audiolm {args.command}'
    _show_library_logs(logging.INFO if debug else logging.WARNING)
    try:
        return args.handler(args)
    except ConfigError as error:
        if debug:
            import traceback
            traceback.print_exc()
        print(f'{prog}: error: {_one_line(error)}', file = sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file = sys.stderr)
        return 130
    except Exception as error:
        if debug:
            import traceback
            traceback.print_exc()
        hint = '' if debug else ' (run with --debug for the traceback)'
        print(f'{prog}: error: {_one_line(error)}{hint}', file = sys.stderr)
        return EXIT_FAILURE


if __name__ == '__main__':
    sys.exit(main())
