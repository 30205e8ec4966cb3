"""engines/interrupt.py: a Ctrl-C during training is raised between two steps, a second one at once."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from layerprobe.engines.interrupt import deferred_interrupt


def ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # handled in the main thread before os.kill returns to Python code


def test_the_first_ctrl_c_waits_for_the_step_boundary_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt() as check:
            for step in range(5):
                check()  # the boundary before each step
                if step == 2:
                    ctrl_c()  # mid-step: a checkpoint being written
                steps.append(step)  # the step finishes
    assert steps == [0, 1, 2]
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_ctrl_c_raises_at_once():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            ctrl_c()
            ctrl_c()
            pytest.fail("the second Ctrl-C did not raise")


def test_a_ctrl_c_in_the_last_step_is_raised_when_training_ends():
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt():
            ctrl_c()
    with deferred_interrupt() as check:  # nothing pending: a block without Ctrl-C raises nothing
        check()


def test_outside_the_main_thread_or_with_a_handler_of_the_users_nothing_changes():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *a: seen.append("user"))
    try:
        with deferred_interrupt():
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            ctrl_c()
        assert seen == ["user"]
    finally:
        signal.signal(signal.SIGINT, previous)
    errors = []

    def in_thread() -> None:
        try:
            with deferred_interrupt() as check:
                check()
        except Exception as e:  # signal.signal outside the main thread would raise ValueError
            errors.append(e)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert errors == []
