"""The signals that end a run or a sweep the way Ctrl-C does, and one way to catch them and let go again.

A run (`session.Interrupts`) and a sweep (`power.knobs.KnobSession`) each put their own handler on SIGINT,
SIGTERM and SIGHUP for a while and then give back what was there before; `Handlers` is that bookkeeping.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

#: Signals that end a run the way Ctrl-C does: what completed is kept, and the run can be resumed.
INTERRUPTING = ("SIGINT", "SIGTERM", "SIGHUP")


class Handlers:
    """`handler` on each of the INTERRUPTING signals between `install` and `restore`, and the handlers it
    replaced put back after. A signal the process ignores (nohup, a background job) stays ignored, and off
    the main thread, where Python cannot set handlers, nothing is installed."""

    def __init__(self, handler: Callable[[int, Any], None]):
        self.handler = handler
        #: The handler each caught signal had before `install`, by signal number.
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in INTERRUPTING:
            signum = getattr(signal, name, None)
            if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
                continue
            self.previous[signum] = signal.signal(signum, self.handler)

    def restore(self) -> None:
        """The handlers from before `install` (the default for one not set from Python); nothing after a
        second call."""
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()
