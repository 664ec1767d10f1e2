"""Byte-level BPE: parity with Hugging Face ``tokenizers``, round trips, files, training."""
import collections
import json

import numpy as np
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

from tinygrad_gpt.text.bpe import BPETokenizer, bytes_to_unicode, ENDOFTEXT

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A small corpus with every kind of pre-token: words, contractions, digits, punctuation,
# runs of whitespace, accents, CJK, emoji.
CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
          "You're resolved rather to die than to famish? We'll see; I'd say it's 1,000 or 2024.\n"
          "Il était une fois un café très élégant. Größe, naïve, façade.\n"
          "日本語のテキストです。中文文本。한국어 텍스트。 👋 hello 👋🏽 wave 🎉🎉 party\n"
          "\tindented\ttabs\t\tand  double  spaces   and\r\nCRLF lines\r\n") * 40

HARD_TEXTS = [
    "", " ", "a", "don't you'll we've I'M she'd they're 'tis", "it's'' 's 'S '''",
    "a  b   c    d", "\t\ttab\t", "\n\n\nlines\n", "crlf\r\nline\r\n\r\n", "  leading and trailing  ",
    "héllo café naïve Größe", "日本語のテキスト 中文", "👋 👋🏽 🎉🎉 🇫🇷 👨‍👩‍👧", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 astral",
    "12345 3.14159 1,000,000 ٣٤٥ ½", f"before{ENDOFTEXT}after", f"{ENDOFTEXT}", f"a {ENDOFTEXT} b{ENDOFTEXT}{ENDOFTEXT}",
    "<|endoftext|", "\u00a0\u2028\u3000 \x0b\x0c\x1c\x85 odd spaces", "\x00\x01\x7f controls",
    "You're resolved rather to die than to famish?",
]


@pytest.fixture(scope="module")
def ours():
    return BPETokenizer.train(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A byte-level BPE trained by ``tokenizers`` with GPT-2's settings, and ours loaded from its files."""
    tk = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, decoders, trainers
    hf = tk.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([CORPUS], trainer)
    folder = tmp_path_factory.mktemp("hf_bpe")
    hf.model.save(str(folder))
    return hf, BPETokenizer.from_files(folder / "vocab.json", folder / "merges.txt")


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("text", HARD_TEXTS)
def test_same_ids_as_hf_tokenizers(hf_pair, text):
    hf, tok = hf_pair
    assert tok.encode(text) == hf.encode(text).ids


def test_same_ids_as_hf_on_the_corpus(hf_pair):
    hf, tok = hf_pair
    assert tok.encode(CORPUS) == hf.encode(CORPUS).ids
    assert tok.special_tokens == {ENDOFTEXT: hf.token_to_id(ENDOFTEXT)}


_PIECES = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.lists(st.sampled_from(list(" \t\n\r\x0b\xa0\u3000'sdtlmvre1日👋é.,!") + [ENDOFTEXT]),
             max_size=20).map("".join))


@PROPERTY
@given(st.lists(_PIECES, max_size=4).map("".join))
def test_same_ids_as_hf_on_any_text(hf_pair, text):
    hf, tok = hf_pair
    assert tok.encode(text) == hf.encode(text).ids


def test_hf_reads_our_files(ours, tmp_path):
    tk = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers
    ours.save(tmp_path)
    hf = tk.Tokenizer(models.BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    hf.add_special_tokens([ENDOFTEXT])
    for text in [CORPUS[:2000]] + HARD_TEXTS:
        assert ours.encode(text) == hf.encode(text).ids


# ----------------------------------------------------------------------------- round trips

@PROPERTY
@given(st.text(st.characters(codec="utf-8"), max_size=60))
def test_decode_inverts_encode(ours, text):
    ids = ours.encode(text)
    assert ours.decode(ids) == text
    assert ours.encode(ours.decode(ids)) == ids  # the encoding is stable


@pytest.mark.parametrize("text", HARD_TEXTS)
def test_round_trip_hard_texts(ours, text):
    assert ours.decode(ours.encode(text)) == text
    assert ours.decode(ours.encode_array(text)) == text


def test_save_and_load(ours, tmp_path):
    ours.save(tmp_path)
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2" and len(lines) == 1 + len(ours.merges)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(ours.vocab_size))
    assert vocab["Ġ"] == ord(" ") and vocab[ENDOFTEXT] == ours.vocab_size - 1
    loaded = BPETokenizer.load(tmp_path)
    assert loaded.vocab == ours.vocab and loaded.merges == ours.merges
    assert loaded.special_tokens == ours.special_tokens
    assert loaded.encode(CORPUS) == ours.encode(CORPUS)


def test_dict_round_trip_through_json(ours):
    d = json.loads(json.dumps(ours.to_dict()))
    again = BPETokenizer.from_dict(d)
    assert again.encode(CORPUS[:3000]) == ours.encode(CORPUS[:3000])
    assert again.special_tokens == ours.special_tokens


# ----------------------------------------------------------------------------- special tokens

def test_special_token_in_text(ours):
    eot = ours.special_tokens[ENDOFTEXT]
    ids = ours.encode(f"hear me{ENDOFTEXT}speak")
    assert ids.count(eot) == 1
    i = ids.index(eot)
    assert ids[:i] == ours.encode("hear me") and ids[i + 1:] == ours.encode("speak")
    assert ours.decode(ids) == f"hear me{ENDOFTEXT}speak"


def test_special_token_as_plain_text(ours):
    ids = ours.encode(ENDOFTEXT, allow_special=False)
    assert ours.special_tokens[ENDOFTEXT] not in ids and len(ids) > 1
    assert ours.decode(ids) == ENDOFTEXT


def test_no_special_tokens():
    tok = BPETokenizer.train(CORPUS[:2000], vocab_size=300, special_tokens=())
    assert tok.special_tokens == {} and tok.vocab_size == 300
    assert tok.decode(tok.encode(ENDOFTEXT)) == ENDOFTEXT


# ----------------------------------------------------------------------------- training

def test_trained_vocab_layout(ours):
    assert ours.vocab_size == 400
    assert ours.vocab[:256] == [bytes([b]) for b in range(256)]
    assert ours.vocab[-1] == ENDOFTEXT.encode() and ours.special_tokens == {ENDOFTEXT: 399}
    assert len(ours.merges) == 400 - 256 - 1
    for rank, (a, b) in enumerate(ours.merges):  # rank order: a merge uses only older tokens
        assert a < 256 + rank and b < 256 + rank
        assert ours.vocab[256 + rank] == ours.vocab[a] + ours.vocab[b]


def _naive_merges(text, n_merges):
    """BPE training by recounting every pair after every merge (slow, obviously right)."""
    import regex
    from tinygrad_gpt.text.bpe import GPT2_PATTERN
    counts = collections.Counter(regex.findall(GPT2_PATTERN, text))
    words = {tuple(w.encode()): n for w, n in counts.items()}
    merges = []
    for new_id in range(256, 256 + n_merges):
        pairs = collections.Counter()
        for w, n in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))  # most frequent, then smallest ids
        merges.append(best)
        merged = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i:i + 2] == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return merges


def test_incremental_training_matches_naive():
    text = CORPUS[:3000]
    tok = BPETokenizer.train(text, vocab_size=256 + 120, special_tokens=())
    assert tok.merges == _naive_merges(text, 120)


def test_training_stops_when_nothing_is_left_to_merge():
    tok = BPETokenizer.train("ab ab", vocab_size=1000)
    assert tok.vocab_size < 1000 and tok.decode(tok.encode("ab ab")) == "ab ab"
    assert tok.encode("ab ab")[1:] == [tok.vocab.index(b" ab")]


def test_encoding_the_training_text_is_stable(ours):
    ids = ours.encode(CORPUS)
    assert ours.encode(ours.decode(ids)) == ids
    assert len(ids) < len(CORPUS.encode()) / 2  # the merges compress the text they came from


# ----------------------------------------------------------------------------- errors

def test_helper_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and all(c.isprintable() and not c.isspace() for c in table.values())


@pytest.mark.parametrize("bad", [[-1], [400], [1.5], [[1, 2]]])
def test_decode_rejects_bad_ids(ours, bad):
    with pytest.raises(ValueError, match="decode"):
        ours.decode(bad)


def test_encode_rejects_non_text(ours):
    with pytest.raises(TypeError):
        ours.encode(b"bytes")
    with pytest.raises(ValueError, match="surrogate"):
        ours.encode("a\ud800b")


def test_train_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train("abc", vocab_size=256)


def test_bad_files(tmp_path, ours):
    ours.save(tmp_path)
    with pytest.raises(ValueError, match="cannot read"):
        BPETokenizer.load(tmp_path / "missing")
    (tmp_path / "merges.txt").write_text("#version: 0.2\nzz q\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merge 0"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 5}', encoding="utf-8")
    with pytest.raises(ValueError, match="ids must be"):
        BPETokenizer.load(tmp_path)
    (tmp_path / "vocab.json").write_text("[1, 2", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read"):
        BPETokenizer.load(tmp_path)
    with pytest.raises(ValueError, match="not a BPE"):
        BPETokenizer.from_dict({"type": "char", "chars": []})


def test_missing_byte_is_a_clear_error():
    tok = BPETokenizer([b"a", b"b", b"ab"], [(0, 1)])
    assert tok.encode("abab") == [2, 2]
    with pytest.raises(ValueError, match="no token for byte 0x63"):
        tok.encode("abc")


def test_tokenizer_from_dict(ours):
    from tinygrad_gpt.tokenizer import tokenizer_from_dict
    from tinygrad_gpt.tokenizer import CharTokenizer
    assert tokenizer_from_dict(ours.to_dict()).encode("speak") == ours.encode("speak")
    assert isinstance(tokenizer_from_dict(CharTokenizer.from_text("ab").to_dict()), CharTokenizer)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tokenizer_from_dict({"type": "wordpiece"})
