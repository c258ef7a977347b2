"""wordcount: how often each word occurs. A word is what `kernels.tokenize_words` says it is."""

from __future__ import annotations

from typing import Any

import numpy as np

from swarm.mapreduce.kernels import tokenize_words

COMBINER = "sum"


def map_arrays(filename: str, data: bytes, params: dict[str, str]) -> tuple[Any, Any]:
    """Every word with a count of one; the sum combiner folds them on the map side."""
    words = tokenize_words(data)
    return words, np.ones(len(words), dtype=np.int64)
