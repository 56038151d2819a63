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


def test_eval_windows_are_fixed_and_too_short_is_an_error():
    toks = np.arange(1000, dtype=np.uint16)
    x, y = eval_windows(toks, 10, 95)
    assert x.shape == (9, 10) and torch.equal(y, x + 1)
    with pytest.raises(DataError):
        eval_windows(toks, 10, 5000)
