"""Progress bars: lively on a terminal, a line every 30 s in logs and CI (not thousands of \\r frames)."""

from __future__ import annotations

import sys

from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """tqdm with an ETA; redraws twice a second on a terminal and every 30 s when stderr is a file."""
    interactive = sys.stderr.isatty()
    kwargs.setdefault("mininterval", 0.5 if interactive else 30.0)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=not enabled, **kwargs)


def clear_progress_bars() -> None:
    """Erase the bars an error interrupted, so that the error is printed on a line of its own."""
    for bar in list(getattr(std_tqdm, "_instances", ())):
        bar.leave = False
        bar.close()


def notice(message: str) -> None:
    """A line for the user on stderr (above any progress bar), e.g. what --resume found and will do."""
    tqdm.write(message, file=sys.stderr)
