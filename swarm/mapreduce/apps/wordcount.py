"""wordcount: how often each word occurs.

A word is what `words.tokenize_words` says it is (a maximal run of ASCII letters, digits and
apostrophes, lowercased), at most `MAX_WORD` bytes: longer runs are cut, so that one freak run of
digits cannot blow up the width of the key array.
"""

from __future__ import annotations

from typing import Any

COMBINER = "sum"
MAX_WORD = 256
#: A whole split per map call: `count_words` works through it in blocks of its own, so a larger call
#: costs no memory beyond the split, and it spares cutting (copying) the split into pieces and
#: combining the pieces' counts again in the spiller.
MAP_BYTES = 1 << 30

#: `map_arrays` reads any buffer: a split read on the submitter's machine reaches it uncopied.
BUFFER_INPUT = True


def map_arrays(filename: str, data: bytes | memoryview, params: dict[str, str]) -> tuple[Any, Any]:
    """Each distinct word of the split with its count, counted on packed keys (`count_words`), in no
    particular order: the spiller sorts them by partition, so sorting them here would be wasted."""
    from swarm.mapreduce.words import count_words  # here: the submitter loads this module without numpy

    return count_words(data, max_len=MAX_WORD).arrays(ordered=False)


def map_split_arrays(files: list[tuple[str, Any]], params: dict[str, str]) -> tuple[Any, Any]:
    """A whole split's word counts: each file counted on packed keys, then added up still packed
    (`merge_word_counts`), so that a word its files share reaches the spiller once. Measured on a split
    of eight 16 MB files: 112 ms from the files' counts to the map's runs, against 179 ms for spilling
    each file's counts (which partitions, sorts and combines three times as many records as strings)."""
    from swarm.mapreduce.words import count_words, merge_word_counts

    counts = merge_word_counts([count_words(data, max_len=MAX_WORD) for _, data in files])
    return counts.arrays(ordered=False)
