"""The MapReduce app of the sales demo's aggregation step (runtime MAPREDUCE, pushed as its own
`mapreduce` artifact): completed orders summed by region and category, and by month.

Its input is the extract step's cleaned orders, one line each: `region,category,month,quantity,fen`.
Each map sums its split in a dictionary before it emits anything (an in-map combiner), so a map sends
one pair per cell and month through the shuffle, not one per order. A value is `orders,quantity,fen`;
the reduce adds them up. Keys: `cell|REGION|CATEGORY` and `month|YYYY-MM` (no spaces: the engine's
output line is `key value`). Integers only, so every sum is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def map(filename: str, contents: str) -> Iterator[tuple[str, str]]:
    """Sum this split's orders by cell and by month."""
    sums: dict[str, list[int]] = {}
    for line in contents.splitlines():
        if not line:
            continue
        region, category, month, quantity, fen = line.split(",")
        for key, units in ((f"cell|{region}|{category}", int(quantity)), (f"month|{month}", 0)):
            total = sums.setdefault(key, [0, 0, 0])
            total[0] += 1
            total[1] += units
            total[2] += int(fen)
    for key, (orders, units, fen_sum) in sums.items():
        yield key, f"{orders},{units},{fen_sum}"


def reduce(key: str, values: Iterable[str]) -> str:
    """Add up the maps' sums of one key."""
    orders = units = fen = 0
    for value in values:
        o, q, f = value.split(",")
        orders, units, fen = orders + int(o), units + int(q), fen + int(f)
    return f"{orders},{units},{fen}"
