"""wattbench.signals.Handlers: a handler on SIGINT, SIGTERM and SIGHUP for a while, and what was there put back."""

from __future__ import annotations

import signal
import threading

import pytest

from wattbench.signals import INTERRUPTING, Handlers

CAUGHT = [getattr(signal, name) for name in INTERRUPTING]


@pytest.fixture(autouse=True)
def own_handlers():
    """Each test starts from and leaves behind the process's handlers (pytest's SIGINT one among them)."""
    before = {signum: signal.getsignal(signum) for signum in CAUGHT}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


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
