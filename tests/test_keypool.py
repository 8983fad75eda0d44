"""KeyPool: keys made ahead, refilled only once the worker is quiet (no timing asserts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from flask_hybrid.core import rsa
from flask_hybrid.keypool import KeyPool

_KEY = rsa.generate_private_key()


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting_generate() -> tuple[list[object], Callable[[], rsa.PrivateKey]]:
    """A generate function that hands out distinct objects and records them."""
    made: list[object] = []

    def generate() -> rsa.PrivateKey:
        key = object()
        made.append(key)
        return key  # type: ignore[return-value]

    return made, generate


def manual_pool(size: int, quiet: float = 0.5) -> tuple[KeyPool, FakeClock, list[object]]:
    clock = FakeClock()
    made, generate = counting_generate()
    pool = KeyPool(size, generate=generate, quiet_period=quiet, clock=clock, background=False)
    return pool, clock, made


def fill(pool: KeyPool, clock: FakeClock) -> None:
    """Step the pool until full, letting the fake clock run through every quiet period."""
    while (wait := pool.fill_step()) is not None:
        clock.now += wait


def test_fills_up_to_size_when_quiet() -> None:
    pool, clock, made = manual_pool(3)
    fill(pool, clock)
    assert len(pool) == 3 and len(made) == 3
    assert pool.fill_step() is None  # full: nothing more


def test_take_serves_pool_keys_then_generates_inline() -> None:
    pool, clock, made = manual_pool(2)
    fill(pool, clock)
    first, second, third = pool.take(), pool.take(), pool.take()
    assert len({id(first), id(second), id(third)}) == 3
    assert {id(first), id(second)} == {id(made[0]), id(made[1])}
    assert third is made[2]  # the pool was empty: made inline
    assert len(pool) == 0


def test_no_refill_while_takes_keep_coming() -> None:
    pool, clock, made = manual_pool(4, quiet=0.5)
    fill(pool, clock)
    for _ in range(4):  # a burst: a take every 0.1 s, shorter than the quiet period
        pool.take()
        clock.now += 0.1
        wait = pool.fill_step()
        assert wait is not None and wait > 0
    assert len(made) == 4  # nothing generated during the burst
    clock.now += 0.4  # 0.5 s after the last take
    assert pool.fill_step() == 0.0
    assert len(made) == 5 and len(pool) == 1


def test_a_take_during_the_refill_postpones_the_rest() -> None:
    pool, clock, made = manual_pool(3, quiet=0.5)
    fill(pool, clock)
    pool.take(), pool.take(), pool.take()
    clock.now += 0.5
    assert pool.fill_step() == 0.0  # one key made in the lull
    pool.take()  # a new handshake
    assert pool.fill_step() == pytest.approx(0.5)  # wait for quiet again
    assert len(made) == 4


def test_wait_is_what_remains_of_the_quiet_period() -> None:
    pool, clock, _ = manual_pool(1, quiet=0.5)
    pool.take()
    clock.now += 0.2
    assert pool.fill_step() == pytest.approx(0.3)


def test_zero_size_generates_every_time_and_never_fills() -> None:
    pool, _, made = manual_pool(0)
    pool.take(), pool.take()
    assert len(made) == 2
    assert pool.fill_step() is None


def test_zero_quiet_period_refills_at_once() -> None:
    pool, _, _ = manual_pool(2, quiet=0.0)
    pool.take()
    assert pool.fill_step() == 0.0
    assert len(pool) == 1


def test_negative_quiet_period_is_refused() -> None:
    with pytest.raises(ValueError):
        KeyPool(1, quiet_period=-1)


def test_background_thread_refills_after_quiet() -> None:
    made: list[rsa.PrivateKey] = []
    generated = threading.Event()

    def generate() -> rsa.PrivateKey:
        made.append(_KEY)
        generated.set()
        return _KEY

    pool = KeyPool(2, generate=generate, quiet_period=0.01)
    pool.take()  # empty: made inline; starts the thread
    deadline = time.monotonic() + 10
    while len(pool) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pool) == 2
    assert len(made) == 3
    assert any(t.name == "flask-hybrid-key-pool" for t in threading.enumerate())


def test_keys_made_before_a_fork_are_not_served_after_it() -> None:
    pool, clock, made = manual_pool(1)
    fill(pool, clock)
    pool._keys_pid = -1  # as if the keys had been made in a parent process
    assert pool.take() is made[1]  # the inherited key is dropped; a new one is made


def test_start_fills_before_the_first_take() -> None:
    made: list[rsa.PrivateKey] = []

    def generate() -> rsa.PrivateKey:
        made.append(_KEY)
        return _KEY

    pool = KeyPool(2, generate=generate, quiet_period=0.0)
    pool.start()
    deadline = time.monotonic() + 10
    while len(pool) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pool) == 2 and len(made) == 2
    pool.take()
    assert len(made) == 2  # served from the pool


def test_background_false_starts_no_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    pool, _, _ = manual_pool(2)
    pool.take()
    after = {t.ident for t in threading.enumerate() if t.name == "flask-hybrid-key-pool"}
    assert not (after - before)


def test_real_keys_are_distinct() -> None:
    pool = KeyPool(1, quiet_period=0.0, background=False)
    while pool.fill_step() is not None:
        pass
    first, second = pool.take(), pool.take()
    assert first.private_numbers() != second.private_numbers()
