"""Benchmarks: the encrypted paths against the plain one, in one run (``make bench``)."""
