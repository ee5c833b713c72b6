"""The signals that end a run or a sweep the way Ctrl-C does, and one way to catch them and let go again.

A run (`session.Interrupts`) and a sweep (`power.knobs.KnobSession`) each put their own handler on SIGINT,
SIGTERM and SIGHUP for a while and then give back what was there before; `Handlers` is that bookkeeping.
A handler ends what runs by raising `SignalInterrupt`, a KeyboardInterrupt; `Handlers` also makes sure that
one Python had to swallow is raised again (see `Handlers.unraisable`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable

#: Signals that end a run the way Ctrl-C does: what completed is kept, and the run can be resumed.
INTERRUPTING = ("SIGINT", "SIGTERM", "SIGHUP")


#: How long after Python swallowed a signal's KeyboardInterrupt the signal comes again: time for the
#: callback it landed in to return.
RESEND_AFTER_S = 0.01


class SignalInterrupt(KeyboardInterrupt):
    """What a caught signal raises: a KeyboardInterrupt (so that pytest and every `except KeyboardInterrupt`
    treat it as Ctrl-C) that knows its signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Handlers:
    """`handler` on each of the INTERRUPTING signals between `install` and `restore`, and the handlers it
    replaced put back after. A signal the process ignores (nohup, a background job) stays ignored, and off
    the main thread, where Python cannot set handlers, nothing is installed."""

    def __init__(self, handler: Callable[[int, Any], None]):
        self.handler = handler
        #: The handler each caught signal had before `install`, by signal number.
        self.previous: dict[int, Any] = {}
        self._previous_unraisable: Callable | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for name in INTERRUPTING:
            signum = getattr(signal, name, None)
            if signum is None or signal.getsignal(signum) is signal.SIG_IGN:
                continue
            self.previous[signum] = signal.signal(signum, self.handler)
        if self.previous:
            self._previous_unraisable, sys.unraisablehook = sys.unraisablehook, self.unraisable

    def restore(self) -> None:
        """The handlers from before `install` (the default for one not set from Python); nothing after a
        second call."""
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()
        if self._previous_unraisable is not None and sys.unraisablehook == self.unraisable:
            sys.unraisablehook = self._previous_unraisable  # (one installed after it passes on to it still)

    def unraisable(self, unraisable) -> None:
        """Python only reports an exception raised in a weakref callback, a `__del__` or the garbage collector:
        a signal whose handler ran there would be lost (seen: a SIGTERM in a torch._dynamo weakref callback,
        and the run went on to its end). Such a SignalInterrupt is not reported; its signal is sent again,
        from a timer thread, to arrive once that callback has returned. Anything else goes to the hook that
        was there before."""
        if isinstance(unraisable.exc_value, SignalInterrupt):
            resend = threading.Timer(RESEND_AFTER_S, os.kill, (os.getpid(), unraisable.exc_value.signum))
            resend.daemon = True
            resend.start()
            return
        (self._previous_unraisable or sys.__unraisablehook__)(unraisable)
