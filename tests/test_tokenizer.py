import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_gpt.tokenizer import CharTokenizer


def test_from_text_is_sorted_set():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    assert tok.encode("hello") == [3, 2, 4, 4, 5]


def test_encode_array_matches_encode():
    tok = CharTokenizer.from_text("abcé€😀")
    ids = tok.encode_array("😀a€é")
    assert ids.dtype == np.int64 and ids.shape == (4,)
    assert ids.tolist() == tok.encode("😀a€é") == [5, 0, 4, 3]


def test_empty_string():
    tok = CharTokenizer.from_text("ab")
    assert tok.encode("") == []
    assert tok.decode([]) == ""
    assert tok.decode(np.array([], dtype=np.int64)) == ""


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=200))
def test_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode(np.array(ids, dtype=np.uint16)) == text


def test_unknown_character_error_names_char_and_position():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError) as e:
        tok.encode("abcabz\nq")
    msg = str(e.value)
    assert "'z'" in msg and "position 5" in msg and "\n" not in msg
    # a character below the table's size but not in the vocabulary, and a newline
    tok = CharTokenizer.from_text("az")
    with pytest.raises(ValueError, match=r"'\\n' at position 1"):
        tok.encode("a\nz")


def test_lone_surrogate_is_a_value_error():
    tok = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match="position 1"):
        tok.encode("a\ud800")


def test_decode_out_of_range():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="id 3 at position 1"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="id -1"):
        tok.decode(np.array([-1]))
    with pytest.raises(ValueError, match="integer"):
        tok.decode([0.5])


def test_dict_and_json_round_trip(tmp_path):
    tok = CharTokenizer.from_text("To be, or not to be: ü\n")
    d = tok.to_dict()
    assert d["type"] == "char" and d["chars"] == sorted(set("To be, or not to be: ü\n"))
    assert json.loads(json.dumps(d)) == d
    assert CharTokenizer.from_dict(d).chars == tok.chars
    path = tmp_path / "tok.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8")) == d
    back = CharTokenizer.load(path)
    assert back.chars == tok.chars and back.encode("not ü") == tok.encode("not ü")


def test_bad_dicts_and_files(tmp_path):
    with pytest.raises(ValueError, match="char tokenizer"):
        CharTokenizer.from_dict({"type": "bpe", "chars": ["a"]})
    with pytest.raises(ValueError, match="single character"):
        CharTokenizer.from_dict({"type": "char", "chars": ["ab"]})
    with pytest.raises(ValueError, match="distinct"):
        CharTokenizer(["a", "a"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        CharTokenizer.load(bad)
    with pytest.raises(ValueError, match="missing.json"):
        CharTokenizer.load(tmp_path / "missing.json")


def test_encode_array_of_a_megabyte_matches_the_lookup():
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz ,.\n'ABCDEFGH"))
    text = "".join(alphabet[rng.integers(0, len(alphabet), 1_000_000)].tolist())
    tok = CharTokenizer.from_text(text)
    ids = tok.encode_array(text)
    assert len(ids) == 1_000_000 and tok.decode(ids) == text
    np.testing.assert_array_equal(ids[:1000], [tok.stoi[c] for c in text[:1000]])
