"""Peak memory of one request through the whole middleware stays within 4 x its wire body.

Measured with tracemalloc (peak minus what was traced before the call), never with timings:
each case calls the app's WSGI callable once, as ``python -m bench.memory`` does. The requests
go to a GET-only page, so the app answers 405 without reading the body and what is measured is
flask-hybrid's own share. The ratio does not depend on the size past a few MiB (the fixed cost
of a request is ~0.1 MiB), so all but the two cases of issue 7 use 4 MiB to keep the run short.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from bench.memory import (
    Case,
    MiB,
    Requests,
    astral_text,
    deep_nesting,
    distinct_members,
    empty_objects,
    measure,
    not_json,
    ordinary_json,
)
from flask_hybrid.errors import InvalidPayload, error_body

from .conftest import base_config

SIZE = 10 * MiB
SMALLER = 4 * MiB
MAX_RATIO = 4.0


@pytest.fixture(scope="module")
def memory_app(vector_keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Flask:
    import app as demo

    flask_app = demo.create_app(base_config(vector_keys, HYBRID_MAX_BODY=2 * SIZE))
    flask_app.instance_path = str(tmp_path_factory.mktemp("instance"))
    return flask_app


@pytest.fixture(scope="module")
def requests_for(memory_app: Flask) -> Requests:
    return Requests(memory_app)


def request_case(requests_for: Requests, form: str, plaintext: bytes, status: int = 405) -> Case:
    build: dict[str, Callable[[bytes], tuple[dict[str, str], bytes]]] = {
        "S": requests_for.s,
        "E-OAEP": lambda text: requests_for.e(text, oaep=True),
        "E-PKCS1": lambda text: requests_for.e(text, oaep=False),
        "J": requests_for.j,
    }
    headers, body = build[form](plaintext)
    return Case(form, "/", headers, body, status)


@pytest.mark.parametrize(
    ("form", "size"),
    [
        pytest.param("E-OAEP", SIZE, id="E-OAEP-10MiB"),
        pytest.param("E-PKCS1", SMALLER, id="E-PKCS1"),
        pytest.param("S", SMALLER, id="S"),
        pytest.param("J", SMALLER, id="J"),
    ],
)
def test_ordinary_request(memory_app: Flask, requests_for: Requests, form: str, size: int) -> None:
    result = measure(memory_app, request_case(requests_for, form, ordinary_json(size)))
    assert result.status == 405
    assert result.ratio <= MAX_RATIO, f"{result.peak / MiB:.1f} MiB for {result.wire / MiB:.1f}"


@pytest.mark.parametrize(
    ("form", "make", "size"),
    [
        pytest.param("E-OAEP", empty_objects, SIZE, id="E-empty-objects-10MiB"),
        pytest.param("J", deep_nesting, SMALLER, id="J-deep-nesting"),
        pytest.param("S", astral_text, SMALLER, id="S-astral-text"),
        pytest.param("E-OAEP", distinct_members, MiB, id="E-distinct-members"),
    ],
)
def test_hostile_json(
    memory_app: Flask,
    requests_for: Requests,
    form: str,
    make: Callable[[int], bytes],
    size: int,
) -> None:
    result = measure(memory_app, request_case(requests_for, form, make(size)))
    assert result.status == 405
    assert result.ratio <= MAX_RATIO, f"{result.peak / MiB:.1f} MiB for {result.wire / MiB:.1f}"


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(not_json(SMALLER), id="not-json"),
        pytest.param(b'{"a":' + empty_objects(SMALLER) + b',"a":1}', id="duplicate-member"),
        pytest.param(b"[" + b"1.5," * (SMALLER // 4) + b"NaN]", id="nan"),
    ],
)
def test_refusal_keeps_its_bytes(
    memory_app: Flask, requests_for: Requests, plaintext: bytes
) -> None:
    result = measure(memory_app, request_case(requests_for, "E-OAEP", plaintext, status=400))
    assert result.status == 400
    assert result.body == error_body(InvalidPayload)
    assert result.ratio <= MAX_RATIO, f"{result.peak / MiB:.1f} MiB for {result.wire / MiB:.1f}"
