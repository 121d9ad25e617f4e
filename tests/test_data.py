"""Datasets, bad-file handling, manifests and batch collation (``audiolm_pytorch.data``)."""

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolm_pytorch.audio import load_audio, resample
from audiolm_pytorch.data import (
    SkippedAudioWarning,
    SoundDataset,
    TextAudioDataset,
    collate_crop,
    collate_pad,
    get_dataloader,
    split_text_audio,
)
from tests.helpers import write_bad_files


def snr_db(reference, estimate):
    reference, estimate = reference.double(), estimate.double()
    return (10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum())).item()


def copy_assets(assets_dir, folder, names):
    folder.mkdir(parents = True, exist_ok = True)
    return [shutil.copyfile(assets_dir / name, folder / name) for name in names]


def make_bad_files(folder, assets_dir):
    """Real broken files, one per failure mode. Returns {name: path}."""
    folder.mkdir(parents = True, exist_ok = True)
    good_wav = (assets_dir / 'speech_2_16k.wav').read_bytes()
    bad = {}

    bad['empty'] = folder / 'empty.wav'
    bad['empty'].write_bytes(b'')

    bad['truncated_header'] = folder / 'truncated_header.wav'
    bad['truncated_header'].write_bytes(good_wav[:30])               # RIFF header cut before the data chunk

    bad['random_bytes'] = folder / 'random.wav'
    bad['random_bytes'].write_bytes(np.random.default_rng(0).bytes(4096))

    bad['zero_length'] = folder / 'zero_length.wav'
    sf.write(str(bad['zero_length']), np.zeros(0, dtype = np.float32), 16000)   # valid header, no frames

    bad['nan'] = folder / 'nan.wav'
    samples = np.sin(np.arange(8000) / 10.).astype(np.float32)
    samples[4000] = np.nan
    sf.write(str(bad['nan']), samples, 16000, subtype = 'FLOAT')            # header is fine, data is not

    bad['text_as_flac'] = folder / 'notes.flac'
    bad['text_as_flac'].write_text('these are my notes, not audio\n' * 20)

    bad['truncated_flac'] = folder / 'truncated.flac'
    flac = (assets_dir / 'speech_0.flac').read_bytes()
    bad['truncated_flac'].write_bytes(flac[:len(flac) // 2])             # header promises more than there is
    return bad


@pytest.fixture
def messy_folder(tmp_path, assets_dir):
    """Two good clips in nested folders next to every kind of broken file."""
    root = tmp_path / 'corpus'
    copy_assets(assets_dir, root / 'speakers' / 'a', ['speech_0_16k.wav'])
    copy_assets(assets_dir, root / 'music' / 'deep' / 'er', ['music_1_16k.wav'])
    bad = make_bad_files(root / 'broken', assets_dir)
    (root / 'README.txt').write_text('not picked up: wrong extension')
    return root, bad


# ----------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------

def test_bad_files_are_skipped_with_one_warning_each(messy_folder):
    root, bad = messy_folder
    with pytest.warns(SkippedAudioWarning) as caught:
        ds = SoundDataset(root, 16000)

    assert len(ds) == 2 + len(bad)     # all discovered; bad ones are replaced when indexed
    header_failures = {'empty', 'truncated_header', 'random_bytes', 'zero_length', 'text_as_flac'}
    skipped_at_init = {path for path, _ in ds.skipped}
    assert {str(bad[k]) for k in header_failures} <= skipped_at_init
    assert len(caught) == len(ds.skipped)
    assert all(reason for _, reason in ds.skipped)
    reasons = dict(ds.skipped)
    assert '0 bytes' in reasons[str(bad['empty'])]
    assert 'zero-length' in reasons[str(bad['zero_length'])]

    # two full epochs: every item is real audio, the NaN file is found on load, nothing warns twice
    with warnings.catch_warnings(record = True) as caught:
        warnings.simplefilter('always')
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]
    assert all(isinstance(x, torch.Tensor) and x.ndim == 1 and x.numel() > 0 and torch.isfinite(x).all()
               for x in items)
    skipped_paths = [path for path, _ in ds.skipped]
    assert str(bad['nan']) in skipped_paths and 'NaN' in dict(ds.skipped)[str(bad['nan'])]
    assert len(skipped_paths) == len(set(skipped_paths))        # each recorded once
    assert len([w for w in caught if issubclass(w.category, SkippedAudioWarning)]) == len(ds.skipped) - len(skipped_at_init)
    # the flac cut in half has a valid header but its decoder loses sync: skipped on load
    assert str(bad['truncated_flac']) in skipped_paths and len(ds.skipped) == len(bad)

    good = {load_audio(root / 'speakers/a/speech_0_16k.wav').wave.shape[-1],
            load_audio(root / 'music/deep/er/music_1_16k.wav').wave.shape[-1]}
    assert {x.shape[0] for x in items} == good


def test_bad_files_found_lazily_never_crash_a_dataloader(messy_folder):
    root, bad = messy_folder
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SkippedAudioWarning)
        ds = SoundDataset(root, 16000, max_length = 4000, validate = False)
        assert ds.skipped == []     # nothing probed yet
        batches = list(get_dataloader(ds, batch_size = 3, shuffle = True))
    assert sum(batch[0].shape[0] for batch in batches) == len(ds)
    assert all(batch[0].shape[1:] == (4000,) and torch.isfinite(batch[0]).all() for batch in batches)
    header_failures = ('empty', 'truncated_header', 'random_bytes', 'zero_length', 'text_as_flac')
    assert {str(bad[k]) for k in header_failures} <= dict(ds.skipped).keys()
    # the NaN file and the half flac are only skipped when the random crop hits their bad part: only the segment
    # that is used gets decoded, and every batch above was finite either way


def test_empty_and_missing_folders_raise_clear_errors(tmp_path, assets_dir):
    empty = tmp_path / 'empty_corpus'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no audio here')
    with pytest.raises(ValueError) as error:
        SoundDataset(empty, 16000)
    assert str(empty) in str(error.value) and 'flac' in str(error.value) and 'wav' in str(error.value)

    with pytest.raises(ValueError, match = 'aiff'):
        SoundDataset(empty, 16000, exts = ['aiff'])

    with pytest.raises(FileNotFoundError, match = 'does_not_exist'):
        SoundDataset(tmp_path / 'does_not_exist', 16000)

    only_bad = tmp_path / 'only_bad'
    bad = make_bad_files(only_bad, assets_dir)
    with pytest.warns(SkippedAudioWarning):
        ds = SoundDataset(only_bad, 16000)             # the NaN file passes the header check ...
    with pytest.warns(SkippedAudioWarning), pytest.raises(RuntimeError, match = 'none of the'):
        ds[0]                                           # ... and when nothing is readable, indexing says so
    assert 'NaN' in dict(ds.skipped)[str(bad['nan'])]

    bad['nan'].unlink()
    bad['truncated_flac'].unlink()
    with pytest.warns(SkippedAudioWarning), pytest.raises(ValueError, match = 'readable audio'):
        SoundDataset(only_bad, 16000)                   # every header is unreadable: fail at construction


def test_too_short_files_are_skipped(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['speech_1_16k.wav'])
    sf.write(str(tmp_path / 'blip.wav'), np.full(100, 0.1, dtype = np.float32), 16000)
    with pytest.warns(SkippedAudioWarning, match = 'too short'):
        ds = SoundDataset(tmp_path, 16000, seq_len_multiple_of = 320)
        items = [ds[0], ds[1]]
    assert all(x.shape[0] % 320 == 0 and x.shape[0] > 0 for x in items)


# ----------------------------------------------------------------------------------------------------------
# discovery, rates, lengths
# ----------------------------------------------------------------------------------------------------------

def test_recursive_discovery_and_extensions(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path / 'x' / 'y' / 'z', ['speech_0.flac', 'music_0.ogg'])
    copy_assets(assets_dir, tmp_path, ['speech_1.mp3'])
    shutil.copyfile(assets_dir / 'music_1_24k.wav', tmp_path / 'x' / 'LOUD.WAV')
    ds = SoundDataset(tmp_path, 24000)
    assert sorted(p.name for p in ds.files) == ['LOUD.WAV', 'music_0.ogg', 'speech_0.flac', 'speech_1.mp3']
    assert ds.skipped == []
    assert [p.name for p in SoundDataset(tmp_path, 24000, exts = ['flac']).files] == ['speech_0.flac']
    assert len(SoundDataset(tmp_path, 24000, exts = ('.OGG', 'mp3')).files) == 2


def test_stereo_44k_is_downmixed_and_resampled(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['stereo_44k.wav'])
    wave = SoundDataset(tmp_path, 16000)[0]
    assert wave.shape == (16000,) and wave.dtype == torch.float32
    expected = load_audio(tmp_path / 'stereo_44k.wav', target_sample_hz = 16000).wave[0]
    torch.testing.assert_close(wave, expected, atol = 1e-5, rtol = 0)


def test_random_crop_is_a_slice_of_the_file(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['speech_3_16k.wav'])
    full = load_audio(tmp_path / 'speech_3_16k.wav').wave[0].numpy()
    ds = SoundDataset(tmp_path, 16000, max_length = 5000)
    starts = set()
    for _ in range(4):
        crop = ds[0].numpy()
        assert crop.shape == (5000,)
        heads = np.lib.stride_tricks.sliding_window_view(full, 8)[:len(full) - 4999]
        candidates = np.flatnonzero((heads == crop[:8]).all(axis = 1))
        candidates = [s for s in candidates if np.array_equal(full[s:s + 5000], crop)]
        assert len(candidates) >= 1
        starts.add(int(candidates[0]))
    assert len(starts) > 1                      # crops are random

    torch.manual_seed(3)
    first = ds[0]
    torch.manual_seed(3)
    assert torch.equal(first, ds[0])            # and reproducible under a seed


def test_short_files_are_zero_padded(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['speech_2_16k.wav'])
    full = load_audio(tmp_path / 'speech_2_16k.wav').wave[0]
    padded = SoundDataset(tmp_path, 16000, max_length = 50000)[0]
    assert padded.shape == (50000,)
    assert torch.equal(padded[:full.shape[0]], full)
    assert (padded[full.shape[0]:] == 0).all()


def test_seq_len_multiple_of(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['speech_4_16k.wav'])
    n = load_audio(tmp_path / 'speech_4_16k.wav').wave.shape[-1]
    wave = SoundDataset(tmp_path, 16000, seq_len_multiple_of = 320)[0]
    assert wave.shape[0] == n // 320 * 320
    assert SoundDataset(tmp_path, 16000, max_length = 10080, seq_len_multiple_of = 320)[0].shape == (9920,)


def test_tuple_of_rates_gives_aligned_segments(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['stereo_44k.wav', 'music_3_24k.wav'])
    ds = SoundDataset(tmp_path, (16000, 24000), max_length = 12000, seq_len_multiple_of = (384, 960))
    for index in range(len(ds)):
        wave_16k, wave_24k = ds[index]
        # max_length counts at the highest rate: 12000 at 24 kHz, 8000 at 16 kHz; then cut to the multiples
        assert wave_16k.shape == (7680,) and wave_24k.shape == (11520,)
        # both rates show the same stretch of time
        upsampled = resample(wave_16k, 16000, 24000)
        assert snr_db(wave_24k[200:7000], upsampled[200:7000]) > 25

    # crops of a resampled file are exact slices of the whole file resampled, at every rate
    full = {hz: load_audio(tmp_path / 'stereo_44k.wav', target_sample_hz = hz).wave[0] for hz in (16000, 24000)}
    stereo_index = [p.name for p in ds.files].index('stereo_44k.wav')
    crop = SoundDataset(tmp_path, (16000, 24000), max_length = 6000)
    for _ in range(3):
        wave_16k, wave_24k = crop[stereo_index]
        errors = torch.stack([(full[16000][s:s + 4000] - wave_16k).abs().max() for s in range(0, 12001, 160)])
        start = int(errors.argmin()) * 160           # crops start on the 10 ms grid shared by 44.1, 16 and 24 kHz
        assert snr_db(full[16000][start:start + 4000], wave_16k) > 80
        assert snr_db(full[24000][start * 3 // 2:start * 3 // 2 + 6000], wave_24k) > 80

    per_rate = SoundDataset(tmp_path, [16000, 24000], max_length = (4000, 6000))
    a, b = per_rate[1]
    assert a.shape == (4000,) and b.shape == (6000,)

    single = SoundDataset(tmp_path, (24000,))
    assert isinstance(single[0], tuple) and len(single[0]) == 1

    with pytest.raises(ValueError, match = 'one length per target rate'):
        SoundDataset(tmp_path, (16000, 24000), max_length = (4000,))
    with pytest.raises(ValueError, match = 'positive'):
        SoundDataset(tmp_path, 16000, max_length = 0)


def test_full_length_tuple_rates_match_direct_loading(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['music_2_24k.wav'])
    wave_16k, wave_24k = SoundDataset(tmp_path, (16000, 24000))[0]
    full = load_audio(tmp_path / 'music_2_24k.wav').wave[0]
    assert torch.equal(wave_24k, full)
    torch.testing.assert_close(wave_16k, resample(full, 24000, 16000))


# ----------------------------------------------------------------------------------------------------------
# manifests
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture
def clips(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path / 'audio', ['speech_0_16k.wav', 'speech_1_24k.wav', 'music_0_16k.wav'])
    return tmp_path


def test_csv_manifest(clips):
    manifest = clips / 'pairs.csv'
    manifest.write_text('path,text,speaker\n'
                        'audio/speech_0_16k.wav,"The quick brown fox, jumping",a\n'
                        'audio/speech_1_24k.wav,"A ""river"" runs",b\n'
                        f'{clips / "audio" / "music_0_16k.wav"},piano,c\n')
    ds = TextAudioDataset(manifest, 16000, max_length = 8000)
    assert len(ds) == 3
    texts = [ds[i][0] for i in range(3)]
    assert texts == ['The quick brown fox, jumping', 'A "river" runs', 'piano']
    text, wave = ds[1]
    assert wave.shape == (8000,) and torch.isfinite(wave).all()

    flipped = TextAudioDataset(manifest, (16000, 24000), max_length = 12000, text_first = False)
    wave_16k, wave_24k, text = flipped[0]
    assert text == 'The quick brown fox, jumping' and wave_16k.shape == (8000,) and wave_24k.shape == (12000,)


def test_jsonl_manifest_with_missing_and_bad_entries(clips):
    manifest = clips / 'pairs.jsonl'
    lines = [dict(path = 'audio/speech_0_16k.wav', text = 'fox'), dict(path = 'audio/gone.wav', text = 'missing'),
             dict(path = 'audio/music_0_16k.wav', text = 'piano')]
    manifest.write_text('\n'.join(json.dumps(line) for line in lines) + '\n\n')
    with pytest.warns(SkippedAudioWarning, match = 'gone.wav'):
        ds = TextAudioDataset(manifest, 16000)
    assert len(ds) == 3 and ds.skipped[0][0].endswith('gone.wav')
    assert ds[1][0] == 'piano'          # the missing file is replaced by the next good pair, text included

    batch = next(iter(get_dataloader(ds, batch_size = 3)))
    texts, waves = batch
    assert texts == ['fox', 'piano', 'piano'] and waves.shape[0] == 3

    (clips / 'broken.jsonl').write_text('{"path": "audio/speech_0_16k.wav", "text": "ok"}\n{not json\n')
    with pytest.raises(ValueError, match = 'line 2'):
        TextAudioDataset(clips / 'broken.jsonl', 16000)
    (clips / 'notext.csv').write_text('path,caption\naudio/speech_0_16k.wav,hello\n')
    with pytest.raises(ValueError, match = '"text"'):
        TextAudioDataset(clips / 'notext.csv', 16000)
    (clips / 'pairs.txt').write_text('audio/speech_0_16k.wav hello\n')
    with pytest.raises(ValueError, match = 'jsonl'):
        TextAudioDataset(clips / 'pairs.txt', 16000)


# ----------------------------------------------------------------------------------------------------------
# routing and collation
# ----------------------------------------------------------------------------------------------------------

def test_split_text_audio_routes_by_type():
    wave, wave_24k = torch.randn(100), torch.randn(150)
    assert split_text_audio(wave) == (None, wave)
    text, audio = split_text_audio(('hello', wave))
    assert text == 'hello' and audio is wave
    text, audio = split_text_audio((wave, 'hello'))
    assert text == 'hello' and audio is wave
    text, audio = split_text_audio(('hi', wave, wave_24k))
    assert text == 'hi' and audio == (wave, wave_24k)
    text, audio = split_text_audio((wave, wave_24k))
    assert text is None and audio == (wave, wave_24k)
    text, audio = split_text_audio((torch.randn(2, 100), ('a', 'b')))      # a collated batch
    assert text == ['a', 'b'] and audio.shape == (2, 100)
    with pytest.raises(TypeError):
        split_text_audio(('only text',))
    with pytest.raises(TypeError):
        split_text_audio(('a', 'b', wave))


def test_collate_pads_or_crops():
    items = [torch.ones(5), torch.ones(3) * 2, torch.ones(4) * 3]
    (padded,) = collate_pad(items)
    assert padded.shape == (3, 5)
    assert torch.equal(padded[1], torch.tensor([2., 2., 2., 0., 0.]))
    (cropped,) = collate_crop(items)
    assert cropped.shape == (3, 3) and torch.equal(cropped[2], torch.full((3,), 3.))

    texts, waves = collate_pad([('a', torch.ones(2)), ('b', torch.ones(4))])
    assert texts == ['a', 'b'] and waves.shape == (2, 4)

    waves, texts = collate_crop([(torch.ones(2), 'a'), (torch.ones(4), 'b')])
    assert texts == ['a', 'b'] and waves.shape == (2, 2)

    low, high = collate_pad([(torch.ones(2), torch.ones(3)), (torch.ones(4), torch.ones(6))])
    assert low.shape == (2, 4) and high.shape == (2, 6)

    text, (low, high) = collate_pad([('a', (torch.ones(2), torch.ones(3))), ('b', (torch.ones(1), torch.ones(2)))])
    assert text == ['a', 'b'] and low.shape == (2, 2) and high.shape == (2, 3)

    with pytest.raises(ValueError, match = 'same fields'):
        collate_pad([('a', torch.ones(2)), (torch.ones(2),)])


def test_get_dataloader_batches(tmp_path, assets_dir):
    copy_assets(assets_dir, tmp_path, ['speech_0_16k.wav', 'speech_2_16k.wav', 'music_0_16k.wav'])
    ds = SoundDataset(tmp_path, 16000)
    lengths = [ds[i].shape[0] for i in range(3)]
    (batch,) = next(iter(get_dataloader(ds, batch_size = 3)))
    assert batch.shape == (3, max(lengths))
    (batch,) = next(iter(get_dataloader(ds, batch_size = 3, pad_to_longest = False)))
    assert batch.shape == (3, min(lengths))

    multi = SoundDataset(tmp_path, (16000, 24000), max_length = 24000)
    low, high = next(iter(get_dataloader(multi, batch_size = 2, num_workers = 1)))
    assert low.shape == (2, 16000) and high.shape == (2, 24000)

    with pytest.raises(ValueError, match = 'collate_fn'):
        get_dataloader(ds, collate_fn = collate_pad)


def test_collate_pads_ids_and_codes_along_time_with_an_impossible_id():
    ids, codes, mask = collate_pad([
        (torch.tensor([4, 0, 2]), torch.zeros(2, 3, dtype = torch.long), torch.ones(2, dtype = torch.bool)),
        (torch.tensor([7]), torch.ones(4, 3, dtype = torch.long), torch.ones(4, dtype = torch.bool))])
    # token id 0 is a real id: padding must never look like one
    assert ids.tolist() == [[4, 0, 2], [7, -1, -1]]
    assert codes.shape == (2, 4, 3) and (codes[0, 2:] == -1).all() and (codes[0, :2] == 0).all()
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    (stereo,) = collate_pad([torch.ones(2, 3), torch.ones(2, 5)])       # audio (c, n): zeros along time
    assert stereo.shape == (2, 2, 5) and (stereo[0, :, 3:] == 0).all()


def test_return_file_end_says_what_is_real_and_where_files_end(tmp_path, assets_dir):
    from audiolm_pytorch.audio import save_audio
    full = load_audio(assets_dir / 'speech_2_16k.wav').wave[0]
    n = full.shape[0]
    save_audio(tmp_path / 'clip.wav', full[None], 16000)
    # default items are unchanged: a bare tensor
    assert torch.is_tensor(SoundDataset(tmp_path, 16000, max_length = 5000)[0])

    # a crop inside the file: not its end, every sample real
    ends = set()
    ds = SoundDataset(tmp_path, 16000, max_length = n - 1, return_file_end = True)
    for seed in range(12):                      # two possible starts: 0 (file goes on) and 1 (ends the file)
        torch.manual_seed(seed)
        wave, num_samples, file_end = ds[0]
        assert wave.shape == (n - 1,) and num_samples.tolist() == [n - 1] and file_end.dtype == torch.bool
        assert bool(file_end) == torch.equal(wave, full[1:])       # the file's end is in the crop exactly then
        ends.add(bool(file_end))
    assert ends == {True, False}

    # a short file, zero-padded: it ends, and only its own samples are real (at every rate)
    wave_16k, wave_24k, num_samples, file_end = SoundDataset(tmp_path, (16000, 24000), max_length = 3 * n,
                                                             return_file_end = True)[0]
    assert bool(file_end) and num_samples.tolist() == [n, n * 3 // 2]
    assert wave_16k.shape == (2 * n,) and (wave_16k[n:] == 0).all() and (wave_16k[:n] != 0).any()
    assert wave_24k.shape == (3 * n,) and (wave_24k[n * 3 // 2:] == 0).all()
    # whole files end; collate_pad stacks the flags and the counts, so a batch says it for every row
    whole = SoundDataset(tmp_path, 16000, seq_len_multiple_of = 320, return_file_end = True)
    waves, num_samples, file_end = collate_pad([whole[0], SoundDataset(tmp_path, 16000, max_length = 4000,
                                                                       return_file_end = True)[0]])
    assert waves.shape == (2, n // 320 * 320) and num_samples.tolist() == [[n // 320 * 320], [4000]]
    assert file_end.tolist() == [True, False]

    # text-audio pairs carry the same fields after the audio
    (tmp_path / 'm.csv').write_text('path,text\nclip.wav,hello\n')
    text, wave, num_samples, file_end = TextAudioDataset(tmp_path / 'm.csv', 16000, max_length = 4000,
                                                         return_file_end = True)[0]
    assert text == 'hello' and wave.shape == (4000,) and num_samples.tolist() == [4000] and not bool(file_end)


# ---- folders without usable audio, corrupt files and rows ----------------------------------------------------------

def test_sound_dataset_folders_without_usable_audio(tmp_path):
    from audiolm_pytorch import SoundDataset
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match = 'no audio files'):
        SoundDataset(tmp_path / 'empty', 16000)
    with pytest.raises(FileNotFoundError):
        SoundDataset(tmp_path / 'nowhere', 16000)
    files = write_bad_files(tmp_path / 'bad')
    files['good'].unlink()
    nan_file = files['nan'].rename(tmp_path / 'nan.wav')
    with pytest.warns(UserWarning, match = 'skipping audio file'), pytest.raises(ValueError, match = 'none of the'):
        SoundDataset(tmp_path / 'bad', 16000)
    # a NaN file has a valid header: it is found (and skipped, logged) when read; with nothing else left the
    # error names the skipped files (a ValueError, and a RuntimeError as tests/test_data.py pins)
    (tmp_path / 'nan_only').mkdir()
    nan_file.rename(tmp_path / 'nan_only' / 'nan.wav')
    ds = SoundDataset(tmp_path / 'nan_only', 16000)
    with pytest.warns(UserWarning, match = 'NaN'), pytest.raises(ValueError, match = 'none of the') as info:
        ds[0]
    assert isinstance(info.value, RuntimeError)


def test_sound_dataset_skips_corrupt_files_with_a_warning(tmp_path):
    from audiolm_pytorch import SoundDataset
    from audiolm_pytorch.data import SkippedAudioWarning
    files = write_bad_files(tmp_path)
    with pytest.warns(SkippedAudioWarning):
        ds = SoundDataset(tmp_path, 16000, max_length = 800)
    skipped = {Path(path).name for path, _ in ds.skipped}
    # every bad file is recorded with its reason; the NaN file's header is fine, so it is found when read
    assert {'zero_bytes.wav', 'truncated_header.wav', 'not_audio.flac', 'zero_frames.wav'} <= skipped
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', SkippedAudioWarning)
        items = [ds[i] for i in range(len(ds))]
    assert all(item.shape == (800,) and torch.isfinite(item).all() for item in items)
    assert 'nan.wav' in {Path(path).name for path, _ in ds.skipped}
    assert str(files['good']) not in {path for path, _ in ds.skipped}


def test_text_audio_dataset_skips_corrupt_rows(tmp_path):
    from audiolm_pytorch.data import SkippedAudioWarning, TextAudioDataset
    write_bad_files(tmp_path)
    manifest = tmp_path / 'pairs.csv'
    manifest.write_text('path,text\ngood.wav,a good clip\nzero_bytes.wav,broken\nmissing.wav,gone\n')
    with pytest.warns(SkippedAudioWarning):
        ds = TextAudioDataset(manifest, 16000, max_length = 400)
    assert len(ds.skipped) == 2
    text, wave = ds[1]                        # the broken row is replaced by a readable one, never crashes
    assert text == 'a good clip' and wave.shape == (400,)


def test_max_length_shorter_than_one_frame_is_refused_up_front(tmp_path):
    # was: every file skipped as "too short" at the first batch, then a RuntimeError blaming the files
    from audiolm_pytorch import SoundDataset
    write_bad_files(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match = 'seq_len_multiple_of'):
            SoundDataset(tmp_path, 16000, max_length = 100, seq_len_multiple_of = 320)
        with pytest.raises(ValueError, match = 'seq_len_multiple_of'):
            SoundDataset(tmp_path, (16000, 24000), max_length = 200, seq_len_multiple_of = (None, 320))
