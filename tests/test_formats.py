import pytest

from bayes_epm.errors import FormatError, InvalidInputError
from bayes_epm.models.formats import Format, parse_format

CANONICAL = ["dense", "s0.5", "s0.875", "s0.75", "2:4", "1:4", "w4", "w8", "w1", "w4a4", "w4a8", "w16a8",
             "s0.75-w4a8", "2:4-w4:absmax", "w4a4:absmax", "s0.5-w2a2", "2:8-w3a3"]


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_names_round_trip(name):
    fmt = Format.parse(name)
    assert fmt.name == name
    assert Format.parse(fmt.name) == fmt
    assert Format.from_dict(fmt.to_dict()) == fmt


@pytest.mark.parametrize("alias, canonical", [
    ("w16", "dense"), ("w16a16", "dense"), ("w4a16", "w4"), ("w4:rms", "w4"), ("s0.50", "s0.5"),
    ("s.5", "s0.5"), (" w4a4 ", "w4a4"), ("s0.5-w16", "s0.5"), ("02:04", "2:4"),
])
def test_aliases_normalise(alias, canonical):
    assert Format.parse(alias).name == canonical


def test_fields():
    f = Format.parse("2:4-w4a8:absmax")
    assert (f.sparsity, f.pattern, f.w_bits, f.a_bits, f.quantizer) == (0.5, "2:4", 4, 8, "absmax")
    assert f.is_sparse and f.is_quantized and not f.is_dense
    assert Format.parse("dense").is_dense
    assert Format(sparsity=0.5, pattern="2:4") == Format(pattern="2:4")


@pytest.mark.parametrize("bad", ["s1.5", "s0", "s1", "s-0.5", "w0", "w9", "w4a0", "w4a17", "w32", "2:2", "4:2",
                                 "0:4", "w4:nosuch", "sparse", "", "-", "s0.5-", "s0.5-2:4", "w4-s0.5",
                                 "s0.5-w4-w8", "W4", "w4b4", "s1e-3", "dense-w4"])
def test_bad_names_raise_the_project_error(bad):
    with pytest.raises(FormatError) as info:
        Format.parse(bad)
    assert isinstance(info.value, InvalidInputError)
    assert "valid" in str(info.value)  # says what is valid


@pytest.mark.parametrize("kw", [dict(w_bits=0), dict(a_bits=12), dict(w_bits=4.5), dict(sparsity=1.0),
                                dict(sparsity=-0.1), dict(sparsity=0.3, pattern="2:4"), dict(pattern="blocky"),
                                dict(w_bits=4, quantizer="nosuch"), dict(w_bits=True)])
def test_bad_fields_raise(kw):
    with pytest.raises(FormatError):
        Format(**kw)


def test_non_string_name():
    with pytest.raises(FormatError):
        parse_format(4)


def test_quantizer_irrelevant_when_nothing_quantized():
    assert Format(quantizer="absmax").name == "dense"
    assert Format(sparsity=0.5, quantizer="absmax") == Format.parse("s0.5")
