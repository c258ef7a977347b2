"""The progress display of every `--wait`: elapsed time, done/running/queued/failed and an ETA.

On a terminal one line is rewritten in place; otherwise (a log file, CI, a pipe) a plain line is printed
when the counts change, and at most every `PLAIN_EVERY` seconds while they do not. The display holds no
clock: the caller passes `now` into every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["Counts", "ProgressDisplay", "format_duration"]

PLAIN_EVERY = 30.0
_WIDTH = 24


def format_duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: short enough for a status line."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass(frozen=True, slots=True)
class Counts:
    """Where the tasks of a job are: `done` and `failed` are final, `running` and `queued` are not."""

    total: int
    done: int = 0
    failed: int = 0
    running: int = 0
    queued: int = 0

    @property
    def finished(self) -> int:
        """Tasks with a final state."""
        return self.done + self.failed


@dataclass(slots=True)
class ProgressDisplay:
    """Shows one job's progress on `stream` (see the module docstring)."""

    stream: TextIO
    tty: bool
    started: float
    label: str = ""
    _last_plain: tuple[Counts, str] | None = None
    _last_plain_at: float = float("-inf")
    _shown: bool = field(default=False)

    def line(self, counts: Counts, now: float, note: str = "") -> str:
        """The status line for `counts` at `now`."""
        elapsed = now - self.started
        filled = int(_WIDTH * counts.finished / max(counts.total, 1))
        bar = "#" * filled + "." * (_WIDTH - filled)
        parts = [
            f"{self.label}[{bar}] {counts.finished}/{counts.total}",
            f"done {counts.done}",
            f"running {counts.running}",
            f"queued {counts.queued}",
            f"failed {counts.failed}",
            f"elapsed {format_duration(elapsed)}",
        ]
        left = counts.total - counts.finished
        if counts.finished > 0 and left > 0:
            parts.append(f"ETA {format_duration(elapsed / counts.finished * left)}")
        text = "  ".join(parts)
        return f"{text}  ({note})" if note else text

    def show(self, counts: Counts, now: float, note: str = "") -> None:
        """Draw the line (terminal) or print it when something changed or a while has passed (plain)."""
        text = self.line(counts, now, note)
        if self.tty:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._shown = True
            return
        if self._last_plain == (counts, note) and now - self._last_plain_at < PLAIN_EVERY:
            return
        self._last_plain, self._last_plain_at = (counts, note), now
        self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        """A line of its own (a warning, a reason), without breaking the status line."""
        self.end()
        self.stream.write(message + "\n")
        self.stream.flush()

    def end(self) -> None:
        """Leave the terminal's status line, so that what follows starts on a line of its own."""
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
