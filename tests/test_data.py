import numpy as np
import pytest
import torch

from bayes_epm.errors import DataError
from bayes_epm.workers.data import SPLIT_BLOCK, VAL_EVERY, _load, eval_windows, load_tokens, sample_batch


def test_builtin_corpus_is_real_text_and_split_deterministically():
    data = load_tokens("builtin")
    assert data.vocab_size == 256 and data.source == "builtin"
    assert data.train.size > 10_000_000
    text = data.train[:2000].tobytes().decode("utf-8")
    assert text.startswith("# ===== Lib/") and "import" in text
    total = data.train.size + data.val.size
    assert data.val.size / total == pytest.approx(1 / VAL_EVERY, rel=0.05)
    _load.cache_clear()  # read and split again from the shipped file: same tokens, same hash
    again = load_tokens("builtin")
    assert again is not data and again.sha256 == data.sha256 and len(data.sha256) == 64
    assert np.array_equal(again.val, data.val)


def _tokens(n, dtype, seed=0):
    return np.random.default_rng(seed).integers(0, 1000, size=n).astype(dtype)


@pytest.mark.parametrize("suffix, dtype", [(".bin", np.uint16), (".u16", np.uint16), (".u32", np.uint32)])
def test_token_files(tmp_path, suffix, dtype):
    n = 3 * SPLIT_BLOCK * VAL_EVERY
    toks = _tokens(n, dtype)
    path = tmp_path / f"tokens{suffix}"
    toks.tofile(path)
    data = load_tokens(str(path))
    assert data.vocab_size == int(toks.max()) + 1
    assert data.train.size + data.val.size == n
    # held-out blocks are every VAL_EVERY-th block of SPLIT_BLOCK tokens
    assert np.array_equal(data.val[:SPLIT_BLOCK], toks[(VAL_EVERY - 1) * SPLIT_BLOCK: VAL_EVERY * SPLIT_BLOCK])


def test_text_file_and_hash_depends_on_content(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    body = ("hello world, " * 100_000).encode()
    a.write_bytes(body)
    b.write_bytes(body[:-1] + b"!")
    da, db = load_tokens(str(a)), load_tokens(str(b))
    assert da.vocab_size == 256
    assert da.sha256 != db.sha256


def test_dtype_override(tmp_path):
    path = tmp_path / "tokens.dat"
    _tokens(2 * SPLIT_BLOCK * VAL_EVERY, np.uint32).tofile(path)
    assert load_tokens(str(path), "uint32").vocab_size <= 1000
    assert load_tokens(str(path), "text").vocab_size == 256


@pytest.mark.parametrize("make, match", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b"abc"), "at least"),
    (lambda p: p.mkdir(), "not a file"),
])
def test_bad_sources(tmp_path, make, match):
    path = tmp_path / "data.txt"
    make(path)
    with pytest.raises(DataError, match=match):
        load_tokens(str(path))


def test_odd_byte_count_for_uint16(tmp_path):
    path = tmp_path / "tokens.bin"
    path.write_bytes(b"\0" * 1001)
    with pytest.raises(DataError, match="whole number"):
        load_tokens(str(path))


def test_unknown_dtype():
    with pytest.raises(DataError, match="valid"):
        load_tokens("builtin", "int8")


def test_batches_are_next_token_pairs_and_seeded():
    toks = np.arange(10_000, dtype=np.uint16)
    x, y = sample_batch(toks, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)
    x2, _ = sample_batch(toks, 4, 16, np.random.default_rng(0))
    assert torch.equal(x, x2)


def test_eval_windows_spread_over_the_whole_split_and_never_span_blocks():
    n_blocks = 6
    toks = np.arange(n_blocks * SPLIT_BLOCK, dtype=np.uint32)  # consecutive ids: a seam breaks x + 1
    x, y = eval_windows(toks, 64, 64 * 60)
    assert x.shape == (60, 64) and torch.equal(y, x + 1)  # targets are the next tokens, no seam crossed
    blocks = (x[:, 0] // SPLIT_BLOCK).unique()
    assert blocks.tolist() == list(range(n_blocks))  # every part of the split, not just its start
    assert ((x[:, -1] + 1) // SPLIT_BLOCK == x[:, 0] // SPLIT_BLOCK).all()
    starts = x[:, 0].tolist()
    assert len(set(starts)) == len(starts) and all(b - a >= 64 for a, b in zip(starts, starts[1:]))
    x2, _ = eval_windows(toks, 64, 64 * 60)
    assert torch.equal(x, x2)  # fixed
    with pytest.raises(DataError, match="windows"):
        eval_windows(toks, 64, 64 * 10_000)


def test_builtin_held_out_set_samples_the_whole_corpus():
    data = load_tokens("builtin")
    x, _ = eval_windows(data.val, 128, 65_536)
    first_block, last_block = data.val[:SPLIT_BLOCK].tobytes(), data.val[-SPLIT_BLOCK:].tobytes()
    assert bytes(x[0].to(torch.uint8).tolist()) in first_block
    assert bytes(x[-1].to(torch.uint8).tolist()) in last_block


def test_huge_token_id_is_a_clear_error(tmp_path):
    path = tmp_path / "tokens.u32"
    toks = np.zeros(2 * SPLIT_BLOCK * VAL_EVERY, dtype=np.uint32)
    toks[5] = 4_000_000_000
    toks.tofile(path)
    with pytest.raises(DataError, match="token id 4000000000"):
        load_tokens(str(path))


def test_builtin_is_text_only():
    with pytest.raises(DataError, match="built-in corpus is text"):
        load_tokens("builtin", "uint16")
