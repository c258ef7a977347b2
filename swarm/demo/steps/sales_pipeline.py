"""Steps of the sales analytics demo: deterministic sales data, its cleaning, the table the MapReduce
aggregation (`sales_aggregate`) yields, a currency conversion, an analysis and a report.

The data is never stored or shipped: every order is a pure function of (seed, order number), so an
extract shard generates exactly its own range of orders wherever it runs; its cleaned orders go to the
aggregation's maps through the data plane when they are large. Money is integer fen (CNY cents), so
every aggregate is exact.

An order: id, date (in 2024), region (EAST, NORTH, SOUTH, WEST), category, product, quantity, unit
price, amount, and a status; CANCELLED orders (about 3 %) are dropped by the extract step's cleaning.
This module imports only the standard library: on a node it is the top-level module of an artifact.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from typing import Any, NamedTuple

REGIONS = ("EAST", "NORTH", "SOUTH", "WEST")
#: Cumulative percent thresholds of the regions' order shares (35, 25, 25, 15).
_REGION_CUTS = (35, 60, 85, 100)
#: Category -> products with their list price in fen.
CATALOG: dict[str, tuple[tuple[str, int], ...]] = {
    "ELECTRONICS": (("phone", 299_900), ("laptop", 549_900), ("headphones", 39_900)),
    "APPAREL": (("jacket", 45_900), ("sneakers", 69_900), ("t-shirt", 9_900)),
    "HOME": (("lamp", 15_900), ("blender", 32_900), ("rug", 89_900)),
    "GROCERY": (("tea", 6_800), ("rice-5kg", 4_500), ("olive-oil", 8_900)),
    "SPORTS": (("yoga-mat", 12_900), ("helmet", 25_900), ("dumbbells", 19_900)),
}
CATEGORIES = tuple(CATALOG)
_FIRST_DAY = datetime.date(2024, 1, 1)
_DAYS = 366
_MASK = (1 << 64) - 1
CSV_HEADER = (
    "order_id",
    "date",
    "region",
    "category",
    "product",
    "quantity",
    "unit_price_fen",
    "amount_fen",
    "status",
)


class Sale(NamedTuple):
    """One generated order."""

    order_id: int
    date: str
    region: str
    category: str
    product: str
    quantity: int
    unit_price_fen: int
    amount_fen: int
    status: str


def _splitmix64(x: int) -> int:
    """A 64-bit mix (splitmix64's finaliser): the same on every platform and Python version."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def sale(seed: int, order_id: int) -> Sale:
    """Order number `order_id` of the data set `seed`."""
    h = _splitmix64(((seed & 0xFFFFFFFF) << 32) ^ order_id)
    h, day = divmod(h, _DAYS)
    h, pick = divmod(h, 100)
    region = REGIONS[next(i for i, cut in enumerate(_REGION_CUTS) if pick < cut)]
    h, c = divmod(h, len(CATEGORIES))
    category = CATEGORIES[c]
    h, p = divmod(h, 3)
    product, list_price = CATALOG[category][p]
    h, q = divmod(h, 8)
    h, markup = divmod(h, 21)  # -10 % .. +10 % of the list price
    h, cancel = divmod(h, 100)
    quantity = q + 1
    unit = list_price * (90 + markup) // 100
    date = (_FIRST_DAY + datetime.timedelta(days=day)).isoformat()
    status = "CANCELLED" if cancel < 3 else "COMPLETED"
    return Sale(order_id, date, region, category, product, quantity, unit, unit * quantity, status)


def shard_range(rows: int, shard: int, shards: int) -> tuple[int, int]:
    """The order ids [start, stop) of map shard `shard` of `shards`."""
    if rows < 0 or shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"bad shard {shard} of {shards} over {rows} rows")
    return rows * shard // shards, rows * (shard + 1) // shards


def generate(seed: int, start: int, stop: int) -> Iterator[Sale]:
    """The orders with ids in [start, stop)."""
    for order_id in range(start, stop):
        yield sale(seed, order_id)


def aggregate(sales: Iterator[Sale] | Sequence[Sale]) -> dict[str, Any]:
    """Completed orders summed by (region, category) and by month in one pass: the plain computation
    the demo's MapReduce aggregation is checked against. Cancelled orders are counted in `rowsRead`
    only."""
    cells: dict[tuple[str, str], list[int]] = {}
    months: dict[str, list[int]] = {}
    read = kept = 0
    for s in sales:
        read += 1
        if s.status != "COMPLETED":
            continue
        kept += 1
        cell = cells.setdefault((s.region, s.category), [0, 0, 0])
        cell[0] += 1
        cell[1] += s.quantity
        cell[2] += s.amount_fen
        month = months.setdefault(s.date[:7], [0, 0])
        month[0] += 1
        month[1] += s.amount_fen
    return {
        "partial": [
            {"region": r, "category": c, "orders": o, "quantity": q, "revenueFen": v}
            for (r, c), (o, q, v) in sorted(cells.items())
        ],
        "months": [{"month": m, "orders": o, "revenueFen": v} for m, (o, v) in sorted(months.items())],
        "rowsRead": read,
        "rowsKept": kept,
    }


# --- the steps -------------------------------------------------------------------------------------


def extract_map(rows: int, seed: int, shard: int = 0, shards: int = 1) -> dict[str, Any]:
    """EXTRACT, a shard: generate this shard's orders and drop cancelled ones. `orders` is the kept
    ones as lines `region,category,month,quantity,fen`, what the aggregation's MapReduce app reads."""
    start, stop = shard_range(int(rows), shard, shards)
    lines = [
        f"{s.region},{s.category},{s.date[:7]},{s.quantity},{s.amount_fen}\n"
        for s in generate(int(seed), start, stop)
        if s.status == "COMPLETED"
    ]
    return {
        "orders": "".join(lines),
        "rowRange": [start, stop],
        "rowsRead": stop - start,
        "rowsKept": len(lines),
    }


def _per_shard(value: Any) -> list[int]:
    # A fanned-out step of one shard hands over its value, not a list of one.
    return [value] if isinstance(value, int) else list(value)


def tabulate(partitions: list[str], rowsRead: Any, rowsKept: Any) -> dict[str, Any]:
    """TRANSFORM: the aggregation's reduce outputs (`key orders,quantity,fen` lines, see
    `sales_aggregate`) as the region x category table, its TSV form and the months."""
    cells: dict[tuple[str, str], tuple[int, int, int]] = {}
    months: dict[str, tuple[int, int]] = {}
    for text in partitions:
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            orders, quantity, fen = (int(x) for x in value.split(","))
            kind, _, name = key.partition("|")
            if kind == "cell":
                region, _, category = name.partition("|")
                cells[(region, category)] = (orders, quantity, fen)
            else:
                months[name] = (orders, fen)
    table = [
        {"region": r, "category": c, "orders": o, "quantity": q, "revenueFen": v}
        for (r, c), (o, q, v) in sorted(cells.items())
    ]
    tsv = "".join(f"{t['region']}\t{t['category']}\t{t['orders']}\t{t['revenueFen']}\n" for t in table)
    return {
        "table": table,
        "tableTsv": tsv,
        "months": [{"month": m, "orders": o, "revenueFen": v} for m, (o, v) in sorted(months.items())],
        "rowsRead": sum(_per_shard(rowsRead)),
        "rowsKept": sum(_per_shard(rowsKept)),
    }


def convert_currency(tableTsv: str, rate: str) -> dict[str, Any]:
    """The Python fallback of the JVM step (`SalesCurrencyConverter`), with the same rounding:
    revenue in fen times `rate` (USD per CNY), as USD with 2 decimals, half-even; average order value
    likewise from the exact quotient."""
    usd_per_cny = Decimal(rate)
    cent = Decimal("0.01")
    converted = []
    with localcontext(Context(prec=60)):
        for line in tableTsv.splitlines():
            if not line.strip():
                continue
            region, category, orders, fen = line.split("\t")
            revenue = Decimal(int(fen)) * usd_per_cny / 100
            average = revenue / int(orders) if int(orders) else Decimal(0)
            converted.append(
                {
                    "region": region,
                    "category": category,
                    "revenueUsd": str(revenue.quantize(cent, ROUND_HALF_EVEN)),
                    "avgOrderUsd": str(average.quantize(cent, ROUND_HALF_EVEN)),
                }
            )
    return {"currency": "USD", "rate": rate, "converted": converted, "engine": "python"}


def analyze(table: list[dict[str, Any]], months: list[dict[str, Any]]) -> dict[str, Any]:
    """ANALYZE: shares by region and category, leaders, and the best and worst month."""
    total = sum(t["revenueFen"] for t in table) or 1
    by_region: dict[str, int] = {}
    by_category: dict[str, int] = {}
    for t in table:
        by_region[t["region"]] = by_region.get(t["region"], 0) + t["revenueFen"]
        by_category[t["category"]] = by_category.get(t["category"], 0) + t["revenueFen"]
    ranked = sorted(months, key=lambda m: (m["revenueFen"], m["month"]))
    orders = sum(t["orders"] for t in table)
    insights = {
        "regionShare": {r: round(100 * v / total, 2) for r, v in sorted(by_region.items())},
        "categoryShare": {c: round(100 * v / total, 2) for c, v in sorted(by_category.items())},
        "topRegion": max(sorted(by_region), key=lambda r: by_region[r]) if by_region else None,
        "topCategory": max(sorted(by_category), key=lambda c: by_category[c]) if by_category else None,
        "bestMonth": ranked[-1]["month"] if ranked else None,
        "worstMonth": ranked[0]["month"] if ranked else None,
        "avgOrderFen": sum(t["revenueFen"] for t in table) // orders if orders else 0,
    }
    return {"insights": insights, "topRegion": insights["topRegion"]}


def load_report(
    table: list[dict[str, Any]],
    converted: list[dict[str, Any]],
    rate: str,
    engine: str,
    insights: dict[str, Any],
    rowsRead: int,
) -> dict[str, Any]:
    """LOAD: the final report, a text table and the figures it was made from."""
    usd = {(c["region"], c["category"]): c for c in converted}
    lines = [
        f"{'REGION':<7}{'CATEGORY':<13}{'ORDERS':>8}{'QTY':>9}{'REVENUE CNY':>17}{'REVENUE USD':>16}"
        f"{'AVG USD':>10}"
    ]
    for t in table:
        money = usd.get((t["region"], t["category"]), {})
        lines.append(
            f"{t['region']:<7}{t['category']:<13}{t['orders']:>8}{t['quantity']:>9}"
            f"{t['revenueFen'] / 100:>17,.2f}{money.get('revenueUsd', '-'):>16}"
            f"{money.get('avgOrderUsd', '-'):>10}"
        )
    kept = sum(t["orders"] for t in table)
    lines.append(
        f"{rowsRead} orders read, {kept} completed, {rowsRead - kept} cancelled; "
        f"USD at {rate} per CNY ({engine} step)"
    )
    return {"report": "\n".join(lines), "rows": len(table), "insights": insights}
