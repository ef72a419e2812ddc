"""SIGTERM as a request to stop the training loop at the next step boundary.

Clusters and `timeout` send SIGTERM some seconds before they kill; the loop then checkpoints the
step it is at and returns. The handler lives only while fit() runs, only in the main thread (the
only one Python lets set handlers) and only for a run that has a directory to checkpoint into.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator


class SigtermRequest:
    """`requested` turns True when SIGTERM arrives while `catching()` is active."""

    def __init__(self) -> None:
        self.requested = False

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True

    @contextlib.contextmanager
    def catching(self, enabled: bool) -> Iterator[None]:
        """Install the handler for the block (when `enabled` and in the main thread); the previous one
        comes back after it. Elsewhere SIGTERM keeps its handler."""
        self.requested = False
        if not enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._request)
        try:
            yield
        finally:
            # None: the previous handler was not set from Python; the default is the closest we can restore
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
