"""The words of a text: the tokenizer and the packed word counter against `re.findall` and `Counter`."""

from __future__ import annotations

import collections
import pickle
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.mapreduce import words as words_module
from swarm.mapreduce.kernels import aggregate
from swarm.mapreduce.words import WordCounts, count_words, merge_word_counts, tokenize_words


def word_reference(data: bytes, max_len: int | None = None) -> list[bytes]:
    words = re.findall(rb"[a-z0-9']+", data.lower())
    return words if max_len is None else [w[:max_len] for w in words]


def count_reference(data: bytes, max_len: int | None = None) -> list[tuple[bytes, int]]:
    return sorted(collections.Counter(word_reference(data, max_len)).items())


def pairs(counts: WordCounts) -> list[tuple[bytes, int]]:
    words, numbers = counts.arrays()
    return list(zip(words.tolist(), numbers.tolist(), strict=True))


texts = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=120).map(str.encode),
    st.text("aZ9' \n.-é\x00", max_size=120).map(str.encode),
    # Words around the packed widths (8 and 16 bytes) and past them, repeated so that counts add up.
    st.lists(
        st.sampled_from([b"a" * n for n in (1, 7, 8, 9, 15, 16, 17, 30)] + [b"x'y", b"A1", b".", b"\xc3\xa9"])
    ).map(b" ".join),
)


@settings(max_examples=150, deadline=None)
@given(texts, st.one_of(st.none(), st.integers(1, 4)))
def test_tokenize_words_matches_regex(data: bytes, max_len: int | None) -> None:
    words = tokenize_words(data, max_len=max_len)
    assert words.dtype.kind == "S"
    assert words.tolist() == word_reference(data, max_len)
    with pytest.MonkeyPatch.context() as patch:  # text cut in tiny blocks: words straddle the cuts
        patch.setattr(words_module, "_TEXT_BLOCK", 3)
        assert tokenize_words(data, max_len=max_len).tolist() == word_reference(data, max_len)


def test_tokenize_words_definition() -> None:
    text = "Don't STOP, café 42nd\tnaïve—x\n".encode()
    assert tokenize_words(text).tolist() == [b"don't", b"stop", b"caf", b"42nd", b"na", b"ve", b"x"]
    assert tokenize_words(b"").tolist() == []
    assert tokenize_words(bytearray(b" ,;")).tolist() == []
    assert tokenize_words(memoryview(b"ab")).tolist() == [b"ab"]
    with pytest.raises(ValueError):
        tokenize_words(b"x", max_len=0)


def test_tokenize_words_across_blocks_with_a_long_last_word() -> None:
    rng = np.random.default_rng(3)
    words = [b"w" * int(n) for n in rng.integers(1, 9, words_module._CHUNK + 500)]
    data = b" ".join(words) + b" " + b"Z" * 40
    assert tokenize_words(data).tolist() == word_reference(data)


@settings(max_examples=200, deadline=None)
@given(texts, st.one_of(st.none(), st.integers(1, 12), st.just(16), st.just(17)))
def test_count_words_equals_counting_the_tokens(data: bytes, max_len: int | None) -> None:
    expected = count_reference(data, max_len)
    assert pairs(count_words(data, max_len=max_len)) == expected
    with pytest.MonkeyPatch.context() as patch:  # tiny blocks: the blocks' counts are merged
        patch.setattr(words_module, "_TEXT_BLOCK", 5)
        assert pairs(count_words(data, max_len=max_len)) == expected


@settings(max_examples=100, deadline=None)
@given(texts)
def test_count_words_arrays_are_what_aggregating_the_tokens_gives(data: bytes) -> None:
    tokens = tokenize_words(data, max_len=256)
    expected_words, expected_counts = aggregate(tokens, np.ones(len(tokens), dtype=np.int64), "sum")
    words, counts = count_words(data, max_len=256).arrays()
    assert (words.dtype, counts.dtype) == (expected_words.dtype, expected_counts.dtype)
    assert np.array_equal(words, expected_words)
    assert np.array_equal(counts, expected_counts)
    unordered, unordered_counts = count_words(data, max_len=256).arrays(ordered=False)
    assert unordered.dtype == words.dtype
    unordered_pairs = list(zip(unordered.tolist(), unordered_counts.tolist(), strict=True))
    assert sorted(unordered_pairs) == list(zip(words.tolist(), counts.tolist(), strict=True))


def test_count_words_at_the_packed_widths() -> None:
    eight, nine = b"abcdefgh", b"abcdefghi"
    sixteen, seventeen = b"0123456789abcdef", b"0123456789abcdefg"
    text = b" ".join([eight, nine, eight, b"ABCDEFGH", sixteen, seventeen, seventeen, nine[:7]])
    assert pairs(count_words(text)) == [
        (sixteen, 1),
        (seventeen, 2),
        (nine[:7], 1),
        (eight, 3),
        (nine, 1),
    ]


def test_count_words_definition() -> None:
    # Apostrophes and digits are word bytes; every non-ASCII byte separates, like punctuation.
    text = "Don't don't DON'T 42 42nd café naïve rock'n'roll \u2019tis\n".encode()
    assert pairs(count_words(text)) == [
        (b"42", 1),
        (b"42nd", 1),
        (b"caf", 1),
        (b"don't", 3),
        (b"na", 1),
        (b"rock'n'roll", 1),
        (b"tis", 1),
        (b"ve", 1),
    ]
    assert pairs(count_words(bytes(range(128, 256)) + b"\x00\x00")) == []
    with pytest.raises(ValueError):
        count_words(b"x", max_len=0)


def test_count_words_of_empty_input() -> None:
    for empty in (b"", b" ,;\n", bytearray(), memoryview(b"")):
        words, counts = count_words(empty).arrays()
        assert (words.dtype, counts.dtype, len(words), len(counts)) == (np.dtype("S1"), np.int64, 0, 0)


def test_count_words_of_a_text_ending_mid_word() -> None:
    # The last word ends at the buffer's end, where the 8-byte reads run past the text.
    for tail in (b"x", b"abcdefgh", b"abcdefghijk", b"abcdefghijklmnopq"):
        text = b"a b " + tail
        assert pairs(count_words(text)) == count_reference(text)
        assert pairs(count_words(memoryview(b"zz " + text)[3:])) == count_reference(text)


def test_count_words_across_blocks_with_a_word_longer_than_a_block() -> None:
    data = b"one two " + b"y" * 50 + b" two " + b"Q" * 20 + b" one"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(words_module, "_TEXT_BLOCK", 16)
        assert pairs(count_words(data)) == count_reference(data)
        assert pairs(count_words(data, max_len=10)) == count_reference(data, 10)


def test_merge_word_counts_adds_texts_up_and_pickles() -> None:
    texts = [b"the cat sat on the mat", b"", b"the extraordinarily long-winded cat", b"THE END"]
    parts = [pickle.loads(pickle.dumps(count_words(t))) for t in texts]
    assert pairs(merge_word_counts(parts)) == count_reference(b" ".join(texts))
    assert pairs(merge_word_counts([])) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(texts, max_size=5))
def test_merged_word_counts_of_any_texts_are_their_counts_added_up(parts: list[bytes]) -> None:
    """Whatever the texts (words around the packed widths included), counting each and merging equals
    counting them all: the merge's run-wise sorts give what a sort of everything would."""
    assert pairs(merge_word_counts([count_words(t) for t in parts])) == count_reference(b" ".join(parts))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a.txt", "b.txt"]), texts), min_size=1, max_size=4))
def test_wordcount_maps_a_whole_split_as_its_files_combined(files: list[tuple[str, bytes]]) -> None:
    """wordcount's `map_split_arrays` emits what combining its `map_arrays` of each file would."""
    from swarm.mapreduce.apps import wordcount

    keys, counts = wordcount.map_split_arrays(files, {})
    each = [wordcount.map_arrays(name, data, {}) for name, data in files]
    expected = aggregate(np.concatenate([k for k, _ in each]), np.concatenate([c for _, c in each]), "sum")
    assert len(keys) == len(set(keys.tolist()))  # every word once
    got = aggregate(keys, counts, "sum")
    assert got[0].tolist() == expected[0].tolist() and got[1].tolist() == expected[1].tolist()
