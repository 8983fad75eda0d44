"""Does the PKCS#1 v1.5 unwrap of format E take the same time whatever the ``ek`` held?

An ``ek`` unwraps to 32 raw bytes, to the 44-character text b64(CEK), or to anything else (with
OpenSSL's implicit rejection, a synthetic message of some other length). If the time after the
RSA operation differed by class, it would tell an attacker which class an ``ek`` is in: a
padding oracle by the clock. This samples ``unwrap_cek_or_random`` for the three classes,
interleaved in random order, and compares them pairwise: medians, Welch's t-test and the
Mann-Whitney U test (normal approximations; the samples are large).

By default the RSA decryption is replaced by a key whose ``decrypt`` returns the prepared
result at once, so what is timed is the Python work that follows it (where the branches were);
``--rsa`` times the real thing with a 2048-bit key (much noisier: RSA dominates).

    python -m bench.timing [--samples N] [--rsa]

Not run by the tests: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import math
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask_hybrid.core import rsa

CLASSES = ("raw 32", "text 44", "other")


class _InstantKey:
    """Stands in for the RSA key: ``decrypt`` hands back what the next call should yield."""

    key_size = 2048

    def __init__(self) -> None:
        self.unwrapped = b""

    def decrypt(self, ciphertext: bytes, padding: Any) -> bytes:
        return self.unwrapped


@dataclass
class Comparison:
    first: str
    second: str
    median_difference_ns: float
    welch_t: float
    welch_p: float
    mann_whitney_z: float
    mann_whitney_p: float


def welch(first: list[int], second: list[int]) -> tuple[float, float]:
    """Welch's t statistic and its two-sided p-value (normal approximation, large samples)."""
    mean_a, mean_b = statistics.fmean(first), statistics.fmean(second)
    var_a, var_b = statistics.variance(first), statistics.variance(second)
    t = (mean_a - mean_b) / math.sqrt(var_a / len(first) + var_b / len(second))
    return t, math.erfc(abs(t) / math.sqrt(2))


def mann_whitney(first: list[int], second: list[int]) -> tuple[float, float]:
    """The Mann-Whitney U test as a z score and its two-sided p-value (ties get mean ranks)."""
    labelled = sorted([(value, 0) for value in first] + [(value, 1) for value in second])
    rank_sum_first = 0.0
    index = 0
    while index < len(labelled):
        end = index
        while end + 1 < len(labelled) and labelled[end + 1][0] == labelled[index][0]:
            end += 1
        mean_rank = (index + end) / 2 + 1
        rank_sum_first += mean_rank * sum(1 for k in range(index, end + 1) if not labelled[k][1])
        index = end + 1
    n_a, n_b = len(first), len(second)
    u = rank_sum_first - n_a * (n_a + 1) / 2
    z = (u - n_a * n_b / 2) / math.sqrt(n_a * n_b * (n_a + n_b + 1) / 12)
    return z, math.erfc(abs(z) / math.sqrt(2))


Prepared = dict[str, tuple[Callable[[], Any], Callable[[], Any]]]  # class: (prepare, call)


def sample(calls: Prepared, samples: int) -> dict[str, list[int]]:
    """``samples`` timings (ns) of each call, the classes interleaved in a fresh order; each
    class's ``prepare`` runs just before its call, outside the timed region."""
    timings: dict[str, list[int]] = {name: [] for name in calls}
    names = list(calls)
    clock = time.perf_counter_ns
    for _ in range(max(50, samples // 20)):  # warm-up
        for prepare, call in calls.values():
            prepare()
            call()
    for _ in range(samples):
        random.shuffle(names)
        for name in names:
            prepare, call = calls[name]
            prepare()
            start = clock()
            call()
            timings[name].append(clock() - start)
    return timings


def instant_calls() -> Prepared:
    key = _InstantKey()
    pools = {
        "raw 32": [os.urandom(32) for _ in range(1000)],
        "text 44": [base64.b64encode(os.urandom(32)) for _ in range(1000)],
        # Synthetic messages of other lengths, as implicit rejection gives.
        "other": [os.urandom(random.choice((0, 31, 43, 45, 100, 245))) for _ in range(1000)],
    }
    wrapped = os.urandom(256)

    def call() -> Any:
        return rsa.unwrap_cek_or_random(key, wrapped, oaep=False)  # type: ignore[arg-type]

    def preparing(pool: list[bytes]) -> Callable[[], None]:
        results = itertools.cycle(pool)

        def prepare() -> None:
            key.unwrapped = next(results)

        return prepare

    return {name: (preparing(pools[name]), call) for name in CLASSES}


def rsa_calls() -> Prepared:
    private_key = rsa.generate_private_key(2048)
    public_key = private_key.public_key()
    cek = os.urandom(32)
    eks = {
        "raw 32": public_key.encrypt(cek, rsa.PKCS1V15),
        "text 44": public_key.encrypt(base64.b64encode(cek), rsa.PKCS1V15),
        "other": os.urandom(255).rjust(256, b"\0"),  # bad padding: implicit rejection
    }

    def nothing() -> None:
        return None

    def unwrapping(ek: bytes) -> Callable[[], Any]:
        return lambda: rsa.unwrap_cek_or_random(private_key, ek, oaep=False)

    return {name: (nothing, unwrapping(eks[name])) for name in CLASSES}


def compare(timings: dict[str, list[int]]) -> list[Comparison]:
    comparisons = []
    for first, second in (("raw 32", "other"), ("text 44", "other"), ("raw 32", "text 44")):
        a, b = timings[first], timings[second]
        t, t_p = welch(a, b)
        z, z_p = mann_whitney(a, b)
        difference = statistics.median(a) - statistics.median(b)
        comparisons.append(Comparison(first, second, difference, t, t_p, z, z_p))
    return comparisons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, help="per class (20000, or 2000 with --rsa)")
    parser.add_argument("--rsa", action="store_true", help="time the real RSA decryption too")
    arguments = parser.parse_args()
    samples = arguments.samples or (2000 if arguments.rsa else 20000)
    calls = rsa_calls() if arguments.rsa else instant_calls()
    timings = sample(calls, samples)
    what = "with RSA-2048" if arguments.rsa else "after the RSA operation"
    print(f"unwrap_cek_or_random, PKCS#1 v1.5, {what}: {samples} samples per class")
    for name in CLASSES:
        values = timings[name]
        quartiles = statistics.quantiles(values, n=4)
        print(
            f"  {name:<8} median {statistics.median(values) / 1000:8.2f} µs"
            f"  (quartiles {quartiles[0] / 1000:.2f} to {quartiles[2] / 1000:.2f})"
        )
    for row in compare(timings):
        print(
            f"  {row.first} vs {row.second}: median difference "
            f"{row.median_difference_ns / 1000:+.3f} µs; Welch t = {row.welch_t:+.2f} "
            f"(p = {row.welch_p:.2g}); Mann-Whitney z = {row.mann_whitney_z:+.2f} "
            f"(p = {row.mann_whitney_p:.2g})"
        )


if __name__ == "__main__":
    main()
