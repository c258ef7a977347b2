"""indexer: for each word, in how many documents it occurs and which, as `word N doc1,doc2,...`."""

from __future__ import annotations

from typing import Any

import numpy as np

from swarm.mapreduce.words import tokenize_words

#: `map_arrays` reads any buffer: a split read on the submitter's machine reaches it uncopied.
BUFFER_INPUT = True


def map_arrays(filename: str, data: bytes | memoryview, params: dict[str, str]) -> tuple[Any, Any]:
    """Each distinct word of the split, with the document's name."""
    words = np.unique(tokenize_words(data, max_len=256))
    name = filename.encode()
    return words, np.full(len(words), name, dtype=f"S{max(len(name), 1)}")


def reduce_arrays(keys: Any, values: Any, starts: Any, counts: Any, params: dict[str, str]) -> Any:
    """`N doc1,doc2` per word: the distinct documents, sorted (one Python step per word, not per record)."""
    out = []
    for start, count in zip(starts.tolist(), counts.tolist(), strict=True):
        docs = np.unique(values[start : start + count]).tolist()
        out.append(b"%d %s" % (len(docs), b",".join(docs)))
    return np.array(out, dtype=np.bytes_)
