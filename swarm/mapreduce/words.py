"""The words of a text: the tokenizer of the word-counting apps, and a word counter over packed keys.

A word is a maximal run of bytes in ``[A-Za-z0-9']``, with ASCII A-Z lowered to a-z: exactly
``re.findall(rb"[a-z0-9']+", data.lower())``. Every other byte separates words, including every byte
of a non-ASCII UTF-8 character (so "café" gives b"caf"): the definition works on bytes, needs no
decoding, and never splits or merges inside a multi-byte character. `max_len` cuts longer words to
their first `max_len` bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from swarm.mapreduce.kernels import Keys, aggregate, combine, key_order

__all__ = ["PACKED_BYTES", "WordCounts", "count_words", "merge_word_counts", "tokenize_words"]

Int64s = npt.NDArray[np.int64]
UInt64s = npt.NDArray[np.uint64]

#: Words of at most this many bytes are counted as one uint64 each.
PACKED_BYTES = 8
_TEXT_BLOCK = 1 << 22  # bytes of text handled at a time
_CHUNK = 1 << 16  # words whose padding one broadcast comparison zeroes: its matrix stays in cache
_PACKED = np.dtype("<u8")  # a packed word's bytes are the integer's bytes in memory order on any machine
# Word bytes: A-Z map to a-z; a-z, 0-9 and ' map to themselves; every other byte (punctuation,
# whitespace, controls, and every byte of a non-ASCII UTF-8 character) becomes NUL.
_WORD_TABLE = bytes(
    c | 0x20 if 65 <= c <= 90 else c if 97 <= c <= 122 or 48 <= c <= 57 or c == 39 else 0 for c in range(256)
)
# _KEEP[n] keeps the first n bytes of a little-endian uint64: a word of n bytes read 8 bytes at a time.
_KEEP = np.array([(1 << 8 * n) - 1 for n in range(PACKED_BYTES + 1)], dtype=_PACKED)


def _blocks(data: bytes | bytearray | memoryview) -> Iterator[tuple[bytes, int]]:
    """The text translated (word bytes lowered, separators NUL) a block at a time, each block ending
    at a separator or at the end of the text: (bytes, size), where the first `size` bytes are the
    block's and `PACKED_BYTES` more follow (the next block's, or NULs at the end), so that an 8-byte
    read at any of its words' starts stays inside the buffer.

    Why blocks: per-word index arrays exist for one block at a time (peak memory is about the text
    plus twice the result, not 7x the text), and the block's buffers are memory the process freed a
    block ago rather than fresh pages the size of the text. `bytes.translate` lowercases and blanks
    separators in one C pass (numpy's fancy indexing of a 256-entry table first widens every byte
    index to 8 bytes).
    """
    n = len(data)
    pos = 0
    while pos < n:
        end = min(pos + _TEXT_BLOCK, n)
        lowered = bytes(data[pos : end + PACKED_BYTES]).translate(_WORD_TABLE)
        size = end - pos
        while end < n:  # cut after the block's last separator, never inside a word
            cut = lowered.rfind(b"\0", 0, size)
            if cut >= 0:
                size = cut + 1
                break
            end = min(pos + 2 * size, n)  # one word fills the whole block: take a larger one
            lowered = bytes(data[pos : end + PACKED_BYTES]).translate(_WORD_TABLE)
            size = end - pos
        if len(lowered) < size + PACKED_BYTES:
            lowered += bytes(PACKED_BYTES)
        yield lowered, size
        pos += size


def _edges(low: npt.NDArray[np.uint8], max_len: int | None) -> tuple[Int64s, Int64s]:
    """(start, length) of each word of a translated block, lengths cut at `max_len`."""
    in_word = np.zeros(len(low) + 2, dtype=bool)
    np.not_equal(low, 0, out=in_word[1:-1])
    edges = np.flatnonzero(in_word[1:] != in_word[:-1])
    starts, lengths = edges[0::2], edges[1::2] - edges[0::2]
    if max_len is not None:
        np.minimum(lengths, max_len, out=lengths)
    return starts, lengths


def _gather(low: npt.NDArray[np.uint8], starts: Int64s, lengths: Int64s) -> Keys:
    """The words of a translated block at `starts` with `lengths`, as an 'S' array as wide as the
    longest: one row gather from a sliding-window view of the block, the bytes past each word's end
    zeroed by one broadcast comparison per `_CHUNK` words."""
    if len(starts) == 0:
        return np.zeros(0, dtype="S1")
    size = len(low)
    width = int(lengths.max())
    words = np.empty((len(starts), width), dtype=np.uint8)
    # Windows may only start where `width` bytes remain; the last few words read from a padded tail.
    body = int(np.searchsorted(starts, size - width, side="right"))
    words[:body] = sliding_window_view(low, width)[starts[:body]]
    if body < len(starts):
        tail = np.zeros(2 * width, dtype=np.uint8)
        tail[:width] = low[size - width :]
        words[body:] = sliding_window_view(tail, width)[starts[body:] - (size - width)]
    columns = np.arange(width)
    for lo in range(0, len(starts), _CHUNK):
        block = words[lo : lo + _CHUNK]
        block *= columns < lengths[lo : lo + _CHUNK, None]
    return words.view(f"S{width}").reshape(-1)


def _check_max_len(max_len: int | None) -> None:
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")


def tokenize_words(data: bytes | bytearray | memoryview, max_len: int | None = None) -> Keys:
    """The words of a text, in text order, as an 'S' array (the indexer's map, for one).

    The array's width is the longest word's, so memory is words x longest: `max_len` truncates longer
    words to their first `max_len` bytes and bounds it (one long digit run could otherwise cost GBs).
    To count words, `count_words` is several times faster than aggregating these.
    """
    _check_max_len(max_len)
    pieces = []
    for lowered, size in _blocks(data):
        low = np.frombuffer(lowered, dtype=np.uint8, count=size)
        pieces.append(_gather(low, *_edges(low, max_len)))
    if not pieces:
        return np.zeros(0, dtype="S1")
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@dataclass(frozen=True, slots=True)
class WordCounts:
    """Distinct words and how often each occurs, in two parts.

    `short` holds the words of at most `PACKED_BYTES` bytes, each packed into one uint64 whose bytes
    in memory order are the word's, NUL-padded (an 'S8' view of the array is the words), ascending as
    integers (not the words' order); `long` holds the longer words as an 'S' array, in a few sorted
    runs. Plain arrays, so that it pickles cheaply: the form in which worker processes hand back their
    counts, to be merged packed.
    """

    short: UInt64s
    short_counts: Int64s
    long: Keys
    long_counts: Int64s

    def arrays(self, *, ordered: bool = True) -> tuple[Keys, Int64s]:
        """(the distinct words as an 'S' array as wide as the longest; their counts), sorted by word
        unless `ordered` is off (for a map's output, which the spiller sorts by partition anyway)."""
        words = np.concatenate([self.short.view("S8"), self.long])
        counts = np.concatenate([self.short_counts, self.long_counts])
        if len(words) == 0:
            return np.zeros(0, dtype="S1"), counts
        if ordered:
            order = key_order(words)
            words, counts = np.take(words, order), np.take(counts, order)
        width = int(np.strings.str_len(words).max())  # as wide as the longest, like `tokenize_words`
        return (words if width == words.dtype.itemsize else words.astype(f"S{width}")), counts


_NO_LONG = (np.zeros(0, dtype="S1"), np.zeros(0, dtype=np.int64))


def count_words(data: bytes | bytearray | memoryview, max_len: int | None = None) -> WordCounts:
    """Each distinct word of a text with its number of occurrences.

    ``count_words(data, max_len).arrays()`` is exactly
    ``aggregate(tokenize_words(data, max_len), np.ones(...), "sum")``, several times faster.

    Why packed keys: a word of at most 8 bytes (about 70% of the words of English text) is read as one
    little-endian uint64 at its start, one gather from an unaligned view of the block, and the bytes
    past its end are masked off. Equal words are then equal integers, and numpy's sort of plain uint64
    plus a run-length count replaces gathering every word into a row of an 'S' array and hash-sorting
    those rows. A word of 9 to 16 bytes is two such reads, which make its row of an 'S16' array
    without a byte-wise gather; those and the rare longer words are aggregated as 'S' keys.
    """
    _check_max_len(max_len)
    return merge_word_counts([_count_block(lowered, size, max_len) for lowered, size in _blocks(data)])


def _count_block(lowered: bytes, size: int, max_len: int | None) -> WordCounts:
    """`count_words` of one block from `_blocks`."""
    low = np.frombuffer(lowered, dtype=np.uint8, count=size)
    starts, lengths = _edges(low, max_len)
    windows = np.ndarray((size,), dtype=_PACKED, buffer=lowered, strides=(1,))
    short = lengths <= PACKED_BYTES
    keys = _packed(windows, starts[short], lengths[short])
    keys.sort()
    firsts = _run_starts(keys)
    counts = np.diff(firsts, append=np.int64(len(keys)))
    if len(keys) == len(starts):
        return WordCounts(np.take(keys, firsts), counts, *_NO_LONG)
    starts, lengths = starts[~short], lengths[~short]
    medium = lengths <= 2 * PACKED_BYTES
    halves = np.empty((int(np.count_nonzero(medium)), 2), dtype=_PACKED)
    halves[:, 0] = windows[starts[medium]]
    halves[:, 1] = _packed(windows, starts[medium] + PACKED_BYTES, lengths[medium] - PACKED_BYTES)
    # "count" reads no values, so the keys stand in for them.
    medium_words = halves.view("S16").reshape(-1)
    long_words = _gather(low, starts[~medium], lengths[~medium])
    parts = [aggregate(medium_words, medium_words, "count"), aggregate(long_words, long_words, "count")]
    return WordCounts(
        np.take(keys, firsts),
        counts,
        np.concatenate([words for words, _ in parts]),
        np.concatenate([n for _, n in parts]),
    )


def _packed(windows: UInt64s, starts: Int64s, lengths: Int64s) -> UInt64s:
    """The words at `starts` of at most 8 bytes as uint64: 8 bytes read at each start, the bytes past
    the word's end zeroed."""
    keys = windows[starts]  # indexing, not np.take: take would copy the strided view whole first
    np.bitwise_and(keys, _KEEP[lengths], out=keys)
    return keys


def _run_starts(ordered: UInt64s) -> Int64s:
    """Where each run of equal values starts in a sorted array."""
    is_start = np.ones(len(ordered), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=is_start[1:])
    return np.flatnonzero(is_start)


def merge_word_counts(parts: Sequence[WordCounts]) -> WordCounts:
    """The counts of several texts (or blocks of one) added up.

    Each part's words come in a few sorted runs (`count_words` makes them so), so both sorts below
    merge runs: numpy's stable sort, a timsort that finds and merges runs, does that in about half the
    time of its quicksort (8 parts of a 128 MB split: 6 against 13 ms for the packed words), and
    `key_order` with `runs` likewise for the longer ones (73 against 86 ms for `aggregate`'s hash sort)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return WordCounts(np.zeros(0, dtype=_PACKED), np.zeros(0, dtype=np.int64), *_NO_LONG)
    short = np.concatenate([p.short for p in parts])
    order = np.argsort(short, kind="stable")
    short = np.take(short, order)
    firsts = _run_starts(short)
    counts = np.concatenate([p.short_counts for p in parts])
    short_counts = np.add.reduceat(np.take(counts, order), firsts) if len(firsts) else counts
    long = np.concatenate([p.long for p in parts])
    order = key_order(long, runs=True)
    long_words, long_counts = combine(
        np.take(long, order), np.take(np.concatenate([p.long_counts for p in parts]), order), "sum"
    )
    return WordCounts(np.take(short, firsts), short_counts, long_words, long_counts)
