"""Garbage-collector thresholds for the TUI process: fewer full collections.

A big run keeps hundreds of thousands of long-lived objects (the run's model, Textual's
rendered strips); CPython's default thresholds then run full (generation 2) collections
every few seconds, each one a 100-400 ms pause in which no key is handled and no frame
drawn (bench/tui_load.py, 1,000 agents). Collecting the young generations less often,
and the old one a tenth as often, keeps those pauses out of the way; reference counting
still frees everything that is not in a cycle at once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

TUI_GC_THRESHOLDS = (10_000, 20, 100)  # CPython's defaults are (700, 10, 10)


@contextmanager
def tuned_gc() -> Iterator[None]:
    """Runs the block with `TUI_GC_THRESHOLDS`, restoring the previous ones after."""
    previous = gc.get_threshold()
    gc.set_threshold(*TUI_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
