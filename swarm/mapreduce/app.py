"""MapReduce applications: loading them, checking them, and running their map and reduce over arrays.

An app is a Python module, named by a file path (its source travels in the task payload, so workers need
no copy) or by the name of a built-in or installed app (entry-point group `swarm.mapreduce`). It offers
one of two APIs, documented in `docs/mapreduce.md`:

* Record API (the classic one): `map(filename, contents) -> iterable of (key, value)` strings and
  `reduce(key, values) -> str`. Its per-record cost is paid inside the user's functions only: the pairs
  become numpy arrays at once, and partitioning, sorting and grouping are kernels.
* Vectorized API: `map_arrays(filename, data, params) -> (keys, values)` numpy arrays (keys UTF-8 bytes,
  dtype 'S'), an optional `COMBINER` ("sum", "count", "min", "max") applied on the map side and as the
  default reduce, an optional `reduce_arrays(keys, values, starts, counts, params) -> per-key array`, an
  optional `format_output(keys, values) -> bytes or a buffer`, and `PARTITIONER = "range"` with
  `sample_keys(data, params) -> keys` for apps whose concatenated outputs must be globally sorted.

Either API may set `RECORD` (fixed-size records: splits are cut at multiples of it, not at newlines)
and `MAP_BYTES` (how much input one map call gets); a vectorized app may set `BUFFER_INPUT = True`
when its `map_arrays` takes any bytes-like buffer, not only `bytes`: a split read on the submitter's
machine then reaches it as a view of the mapped input file, uncopied (see `locality.read_local`). A
vectorized app may also offer `map_split_arrays(files, params) -> (keys, values)`, called once with all
of a split's (filename, data) instead of `map_arrays` once per piece, so that it can combine what its
files share before the engine sees it; it must emit what `map_arrays` of each file would, combined.
"""

from __future__ import annotations

import importlib
import re
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarm.errors import Fatal, InvalidSpec

# numpy loads when a map or a reduce first runs: the submitter loads an app only to check it, and
# numpy would be a fifth of its start (the same choice as in `tasks`).
if TYPE_CHECKING:
    from swarm.mapreduce.kernels import Keys, Values

__all__ = ["BUILTIN_APPS", "COMBINERS", "MAP_BYTES", "App", "AppSource", "load_app", "resolve_app"]

BUILTIN_APPS = ("wordcount", "indexer", "grep", "sort", "groupby")
COMBINERS = ("sum", "count", "min", "max")
#: Bytes of input one map call gets, unless the app says otherwise (`MAP_BYTES`): a split is cut into
#: pieces of about this size at line (or record) boundaries, so a map holds one piece's pairs at a time.
#: For word counting 16 MB pieces were a third faster than whole 64 MB splits (they stay nearer the
#: cache); an app whose map output is views of its input (sort) gains nothing from cutting, which copies.
MAP_BYTES = 16 * 1024 * 1024
_NEWLINE = re.compile(b"\n")
APP_GROUP = "swarm.mapreduce"


@dataclass(frozen=True, slots=True)
class AppSource:
    """How a worker finds the app: a module name, or the source text of a user's file."""

    name: str
    module: str | None = None
    source: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """JSON form for task payloads."""
        return {"name": self.name, "module": self.module, "source": self.source}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> AppSource:
        """Inverse of `to_payload`."""
        return cls(str(data["name"]), data.get("module"), data.get("source"))


def resolve_app(spec: str) -> AppSource:
    """`--app` value -> where the app comes from: a .py file, a built-in, or an installed app."""
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        try:
            return AppSource(path.stem, source=path.read_text())
        except OSError as exc:
            raise InvalidSpec(f"cannot read app {spec}: {exc}") from None
    if spec in BUILTIN_APPS:
        return AppSource(spec, module=f"swarm.mapreduce.apps.{spec}")
    from importlib.metadata import entry_points  # only for an installed app: it costs 9 ms to load

    for ep in entry_points(group=APP_GROUP):
        if ep.name == spec:
            return AppSource(spec, module=ep.value.partition(":")[0])
    known = ", ".join(BUILTIN_APPS)
    raise InvalidSpec(f"no app {spec!r}: give a .py file, a built-in ({known}) or an installed app")


def load_app(src: AppSource, params: dict[str, str] | None = None) -> App:
    """Import the app and check that it offers map and reduce in one of the two APIs."""
    if src.source is not None:
        module = types.ModuleType(f"swarm_app_{src.name}")
        module.__file__ = f"<app {src.name}>"
        try:
            exec(compile(src.source, f"<app {src.name}>", "exec"), module.__dict__)
        except Exception as exc:
            raise InvalidSpec(f"app {src.name} failed to load: {type(exc).__name__}: {exc}") from None
    elif src.module is not None:
        module = importlib.import_module(src.module)
    else:
        raise InvalidSpec(f"app {src.name}: neither a module nor source")
    return App(src.name, module, dict(params or {}))


class App:
    """A loaded app with one calling convention for both APIs."""

    def __init__(self, name: str, module: types.ModuleType, params: dict[str, str]) -> None:
        self.name = name
        self.params = params
        self._m = module
        self.vectorized = callable(getattr(module, "map_arrays", None))
        if not self.vectorized and not callable(getattr(module, "map", None)):
            raise InvalidSpec(f"app {name} defines neither map(filename, contents) nor map_arrays(...)")
        self._map_split: Callable[..., Any] | None = getattr(module, "map_split_arrays", None)
        if self._map_split is not None and not (self.vectorized and callable(self._map_split)):
            raise InvalidSpec(f"app {name}: map_split_arrays must be a function beside map_arrays")
        self.combiner: str | None = getattr(module, "COMBINER", None)
        if self.combiner is not None and self.combiner not in COMBINERS:
            raise InvalidSpec(f"app {name}: COMBINER must be one of {', '.join(COMBINERS)}")
        has_reduce = callable(getattr(module, "reduce", None)) or callable(
            getattr(module, "reduce_arrays", None)
        )
        if not has_reduce and self.combiner is None:
            raise InvalidSpec(f"app {name} defines no reduce(key, values), reduce_arrays(...) or COMBINER")
        self.record_size: int | None = getattr(module, "RECORD", None)
        self.buffer_input = getattr(module, "BUFFER_INPUT", False)
        if type(self.buffer_input) is not bool:
            raise InvalidSpec(f"app {name}: BUFFER_INPUT must be True or False")
        self.map_bytes: int = getattr(module, "MAP_BYTES", MAP_BYTES)
        if type(self.map_bytes) is not int or self.map_bytes < 1:
            raise InvalidSpec(f"app {name}: MAP_BYTES must be a positive integer")
        self.partitioner: str = getattr(module, "PARTITIONER", "hash")
        if self.partitioner not in ("hash", "range"):
            raise InvalidSpec(f"app {name}: PARTITIONER must be 'hash' or 'range'")
        if self.partitioner == "range" and not callable(getattr(module, "sample_keys", None)):
            raise InvalidSpec(f"app {name}: range partitioning needs sample_keys(data, params)")
        check_params: Callable[[dict[str, str]], None] | None = getattr(module, "check_params", None)
        if check_params is not None:
            # Wrong parameters are the submitter's to fix: say so now, not in a task's traceback.
            try:
                check_params(params)
            except (TypeError, ValueError) as exc:
                raise InvalidSpec(f"app {name}: {exc}") from None

    def with_combiner(self, combiner: str | None) -> App:
        """The same app with `--combiner` overriding its own."""
        if combiner is not None:
            if combiner not in COMBINERS:
                raise InvalidSpec(f"--combiner must be one of {', '.join(COMBINERS)}")
            self.combiner = combiner
        return self

    def map_batches(self, split: Sequence[tuple[str, bytes | memoryview]]) -> Iterator[tuple[Keys, Values]]:
        """The (keys, values) arrays of a split's (filename, data) in batches: one from
        `map_split_arrays` where the app has it, else one per piece of at most `map_bytes` of each file
        (cut at a line or record boundary), so that a caller holds one piece's pairs at a time."""
        if self._map_split is not None:
            files = [(filename, self._input(data)) for filename, data in split]
            yield self._checked(
                "map_split_arrays",
                _deterministic(self.name, "map_split_arrays", self._map_split, files, self.params),
            )
            return
        for filename, data in split:
            for piece in _pieces(data, self.record_size, self.map_bytes):
                yield self.map(filename, piece)

    def map_all(self, split: Sequence[tuple[str, bytes | memoryview]]) -> tuple[Keys, Values]:
        """All of a split's (keys, values) as one pair of arrays (`map_batches` joined)."""
        import numpy as np

        # An empty file's arrays may have a default type: only the others say what the app emits.
        batches = [batch for batch in self.map_batches(split) if len(batch[0])]
        if not batches:
            return self.map(split[0][0] if split else "", b"")
        if len(batches) == 1:
            return batches[0]
        return np.concatenate([k for k, _ in batches]), np.concatenate([v for _, v in batches])

    def map(self, filename: str, data: bytes | memoryview) -> tuple[Keys, Values]:
        """Run the app's map over one piece of input and return (keys, values) arrays."""
        if self.vectorized:
            mapped = _deterministic(
                self.name, "map_arrays", self._m.map_arrays, filename, self._input(data), self.params
            )
            return self._checked("map_arrays", mapped)
        pairs = _deterministic(self.name, "map", self._m.map, filename, str(data, "utf-8", errors="replace"))
        try:
            return _pairs_to_arrays(self.name, pairs)
        except TypeError as exc:
            # A wrong type stays wrong however often it runs: no retries.
            raise Fatal(str(exc)) from None

    def _input(self, data: bytes | memoryview) -> bytes | memoryview:
        """A memoryview as it is for an app that takes buffers (`BUFFER_INPUT`), as `bytes` for any other."""
        return data.tobytes() if isinstance(data, memoryview) and not self.buffer_input else data

    def _checked(self, what: str, mapped: Any) -> tuple[Keys, Values]:
        """A vectorized map's output as arrays, `Fatal` unless keys are bytes and as many as values."""
        import numpy as np

        keys, values = (np.asarray(part) for part in mapped)
        if keys.dtype.kind != "S":
            raise Fatal(f"app {self.name}: {what} must return keys as bytes (dtype 'S'), got {keys.dtype}")
        if len(keys) != len(values):
            raise Fatal(f"app {self.name}: {what} returned {len(keys)} keys but {len(values)} values")
        return keys, values

    @property
    def merge_op(self) -> str | None:
        """The combiner op that is this app's whole reduce, or None when the app reduces groups itself.

        An app without a reduce of its own (or a vectorized one, whose record reduce is not called) had
        its pairs combined on the map side; its reduce combines those partial results again: partial
        counts add up, partial sums, minima and maxima combine (`MERGE_OP`)."""
        from swarm.mapreduce.kernels import MERGE_OP

        record_reduce = getattr(self._m, "reduce", None)
        if getattr(self._m, "reduce_arrays", None) is None and (record_reduce is None or self.vectorized):
            return MERGE_OP[self.combiner or "sum"]
        return None

    def reduce(self, sorted_keys: Keys, values: Values) -> tuple[Keys, Values]:
        """Group `values` by `sorted_keys` and return (distinct keys, one output value per key)."""
        import numpy as np

        from swarm.mapreduce.kernels import combine, group_runs

        merge_op = self.merge_op
        if merge_op is not None:
            return combine(sorted_keys, values, merge_op)
        reduce_arrays: Callable[..., Any] | None = getattr(self._m, "reduce_arrays", None)
        record_reduce: Callable[[str, list[str]], Any] | None = getattr(self._m, "reduce", None)
        keys, starts, counts = group_runs(sorted_keys)
        if reduce_arrays is not None:
            return keys, np.asarray(reduce_arrays(keys, values, starts, counts, self.params))
        assert record_reduce is not None
        out = []
        for i, key in enumerate(keys.tolist()):
            group = [v.decode() for v in values[starts[i] : starts[i] + counts[i]].tolist()]
            result = record_reduce(key.decode(), group)
            if not isinstance(result, str):
                raise TypeError(f"app {self.name}: reduce must return a string, got {type(result).__name__}")
            out.append(result.encode())
        return keys, np.array(out, dtype=np.bytes_)

    def format_output(self, keys: Keys, values: Values) -> memoryview:
        """The bytes of one output file: `key value` lines unless the app formats its own.

        An app's `format_output` may return bytes or any contiguous buffer (a numpy array of its output
        records, say): it is read in place, since copying a reducer's whole output costs as much as
        sending it.
        """
        custom = getattr(self._m, "format_output", None)
        body = custom(keys, values) if custom is not None else format_lines(keys, values)
        try:
            return memoryview(body).cast("B")
        except (TypeError, ValueError) as exc:
            raise Fatal(
                f"app {self.name}: format_output must return bytes or a contiguous buffer ({exc})"
            ) from None

    def sample_keys(self, data: bytes) -> Keys:
        """Keys of a sample of the input, for range partitioning."""
        import numpy as np

        return np.asarray(self._m.sample_keys(data, self.params))


def format_lines(keys: Keys, values: Values) -> bytes:
    """`key value\\n` per key, keys in the given (sorted) order."""
    import numpy as np

    if len(keys) == 0:
        return b""
    if values.ndim == 1 and values.dtype.kind in "iu":
        return b"".join(
            _integer_lines(keys[lo : lo + _LINES_AT_ONCE], values[lo : lo + _LINES_AT_ONCE])
            for lo in range(0, len(keys), _LINES_AT_ONCE)
        )
    if values.dtype.kind == "S":
        vals = values
    elif values.dtype.kind == "f":
        vals = np.char.encode(np.char.mod("%.12g", values), "ascii")
    else:
        vals = values.astype(np.bytes_)
    lines = np.strings.add(np.strings.add(keys, b" "), vals)
    return b"\n".join(lines.tolist()) + b"\n"


#: Lines `_integer_lines` builds at a time: its two byte matrices stay a few MB even for wide keys.
_LINES_AT_ONCE = 1 << 15
#: Decimal digits of the largest uint64.
_DIGITS = 20


def _integer_lines(keys: Keys, values: Values) -> bytes:
    """`format_lines` of integer values, the same bytes, built as arrays: each line laid out in a row of
    a byte matrix (key, space, sign, digits right-aligned, newline) and the bytes each line uses taken
    from it in one boolean selection. Turning every count into a bytes object first (`astype(np.bytes_)`
    and then `tolist()`) took most of a word count reducer's output time: 50-80 ms for 170k words."""
    import numpy as np

    n, width = len(keys), keys.dtype.itemsize
    negative = values < 0
    magnitude = values.astype(np.uint64)  # a negative value wraps; negating it in uint64 is its size
    np.negative(magnitude, out=magnitude, where=negative)
    rows = np.empty((n, width + _DIGITS + 3), dtype=np.uint8)
    keep = np.zeros(rows.shape, dtype=bool)
    rows[:, :width] = np.ascontiguousarray(keys).view(np.uint8).reshape(n, width)
    keep[:, :width] = np.arange(width) < np.strings.str_len(keys)[:, None]
    rows[:, width] = ord(" ")
    keep[:, width] = True
    rows[:, width + 1] = ord("-")
    keep[:, width + 1] = negative
    column = width + 1 + _DIGITS  # the units digit's
    keep[:, column] = True  # zero has one digit too
    while True:
        tens = magnitude // 10
        rows[:, column] = magnitude - tens * 10 + ord("0")
        magnitude = tens
        more = magnitude > 0
        if not more.any():
            break
        column -= 1
        keep[:, column] = more
    rows[:, -1] = ord("\n")
    keep[:, -1] = True
    return rows[keep].tobytes()


def _pieces(data: bytes | memoryview, record_size: int | None, size: int) -> list[bytes | memoryview]:
    """`data` cut into pieces of about `size` bytes at line (or record) boundaries."""
    pieces, start = [], 0
    while start < len(data):
        end = min(start + size, len(data))
        if end < len(data):
            if record_size:
                end = max(start + record_size, end - (end - start) % record_size)
            else:
                newline = _NEWLINE.search(data, end)  # a memoryview has no find(); a pattern reads it
                end = len(data) if newline is None else newline.end()
        pieces.append(data[start:end])
        start = end
    return pieces


def _deterministic(name: str, what: str, func: Callable[..., Any], *args: Any) -> Any:
    """Call an app function; a TypeError or ValueError it raises comes from its code and its input,
    which a retry gives it again, so the task fails at once (`Fatal`) with the error's first line."""
    try:
        return func(*args)
    except (TypeError, ValueError) as exc:
        raise Fatal(f"app {name}: {what} failed: {type(exc).__name__}: {exc}") from exc


def _pairs_to_arrays(name: str, pairs: Any) -> tuple[Keys, Values]:
    import numpy as np

    keys: list[bytes] = []
    values: list[bytes] = []
    for pair in pairs:
        try:
            key, value = pair
        except (TypeError, ValueError):
            raise TypeError(f"app {name}: map must yield (key, value) pairs, got {pair!r}") from None
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"app {name}: map must yield string keys and values, got "
                f"({type(key).__name__}, {type(value).__name__})"
            )
        keys.append(key.encode())
        values.append(value.encode())
    return np.array(keys, dtype=np.bytes_), np.array(values, dtype=np.bytes_)
