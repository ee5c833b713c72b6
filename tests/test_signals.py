"""wattbench.signals.Handlers: a handler on SIGINT, SIGTERM and SIGHUP for a while, and what was there put back."""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time

import pytest

from wattbench.signals import INTERRUPTING, Handlers, SignalInterrupt

CAUGHT = [getattr(signal, name) for name in INTERRUPTING]


@pytest.fixture(autouse=True)
def own_handlers():
    """Each test starts from and leaves behind the process's handlers (pytest's SIGINT one among them) and
    its unraisable-exception hook (pytest's)."""
    before = {signum: signal.getsignal(signum) for signum in CAUGHT}
    hook = sys.unraisablehook
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
    sys.unraisablehook = hook


@pytest.fixture
def received():
    return []


@pytest.fixture
def handlers(received):
    return Handlers(lambda signum, frame: received.append(signal.Signals(signum).name))


def test_the_handler_takes_each_signal_and_the_previous_ones_come_back(handlers, received):
    earlier = []
    def previous(signum, frame):
        earlier.append(signum)
    signal.signal(signal.SIGHUP, previous)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    handlers.install()
    signal.raise_signal(signal.SIGHUP)
    signal.raise_signal(signal.SIGTERM)
    assert received == ["SIGHUP", "SIGTERM"] and earlier == []
    assert handlers.previous[signal.SIGHUP] is previous and handlers.previous[signal.SIGTERM] is signal.SIG_DFL
    handlers.restore()
    assert signal.getsignal(signal.SIGHUP) is previous and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    signal.raise_signal(signal.SIGHUP)
    assert earlier == [signal.SIGHUP] and received == ["SIGHUP", "SIGTERM"]


def test_an_ignored_signal_stays_ignored(handlers, received):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    handlers.install()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and signal.SIGHUP not in handlers.previous
    signal.raise_signal(signal.SIGHUP)
    assert received == []
    assert signal.getsignal(signal.SIGTERM) is handlers.handler  # the others are still caught
    handlers.restore()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_a_handler_not_set_from_python_comes_back_as_the_default(handlers):
    """signal.getsignal gives None for a handler installed outside Python; signal.signal cannot take None."""
    handlers.install()
    handlers.previous[signal.SIGHUP] = None
    handlers.restore()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL


def test_restoring_twice_leaves_later_handlers_alone(handlers):
    handlers.install()
    handlers.restore()
    def later(signum, frame):
        pass
    signal.signal(signal.SIGTERM, later)
    handlers.restore()
    assert signal.getsignal(signal.SIGTERM) is later and handlers.previous == {}


def test_off_the_main_thread_nothing_is_installed(handlers):
    before = {signum: signal.getsignal(signum) for signum in CAUGHT}
    worker = threading.Thread(target=handlers.install)
    worker.start()
    worker.join()
    assert handlers.previous == {} and {signum: signal.getsignal(signum) for signum in CAUGHT} == before


def interrupt(signum, frame):
    raise SignalInterrupt(signum)


class SignalledWhileDropped:
    """An object whose `__del__` takes a SIGTERM: its handler runs there, where Python swallows exceptions."""

    def __init__(self, ran: list):
        self.ran = ran

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)
        self.ran.append("__del__ went on")  # the handler has raised by now, inside __del__


def test_a_signal_whose_interrupt_python_swallowed_is_raised_again_once_the_callback_returned():
    """A handler that runs inside a __del__ (or a weakref callback, as torch._dynamo's) raises there, Python only
    reports it, and the signal would be lost: it is sent again, and interrupts the code that runs next."""
    reported, ran = [], []
    sys.unraisablehook = reported.append  # the hook before: what else Python reports still gets there
    handlers = Handlers(interrupt)
    handlers.install()
    try:
        with pytest.raises(SignalInterrupt) as raised:
            SignalledWhileDropped(ran)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.001)
    finally:
        handlers.restore()
    assert raised.value.signum == signal.SIGTERM and str(raised.value) == "SIGTERM"
    assert ran == [] and reported == []  # swallowed in __del__ (which stopped there), and not reported


def test_other_unraisable_exceptions_go_to_the_hook_before_and_restore_puts_it_back():
    reported = []
    sys.unraisablehook = before = reported.append
    handlers = Handlers(interrupt)
    handlers.install()
    assert sys.unraisablehook == handlers.unraisable

    class Failing:
        def __del__(self):
            raise ValueError("not a signal")

    Failing()
    gc.collect()
    assert [type(found.exc_value) for found in reported] == [ValueError]
    handlers.restore()
    assert sys.unraisablehook is before
