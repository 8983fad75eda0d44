"""Issue 7 §1 end to end: a proxy after TLS must not make the Python client run a request twice.

A live server runs an app whose ``POST /api/order`` (and bodiless ``DELETE /api/order/<id>``)
counts its executions, behind :class:`tests.attack_proxy.AttackProxy`. The proxy forwards each
order, so the app executes it, then drops the real answer and sends a forgery: an unsigned
refusal, a genuine signed refusal captured from another request, or an empty 204. For every
format the client must raise :class:`SignatureError` and the app must have executed the order
exactly once. A genuine refusal of the request itself is still verified and retried once.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from flask import Flask, request
from requests.adapters import HTTPAdapter

import app as demo
from flask_hybrid.client import (
    HybridSession,
    InvalidSessionError,
    ResponseError,
    SignatureError,
    UnknownKeyError,
    content_digest,
)
from flask_hybrid.core import rsa
from flask_hybrid.core.encoding import b64encode
from flask_hybrid.core.keyring import KeyRing

from .attack_proxy import AttackProxy
from .builders import j_header, j_token
from .conftest import LiveServer, base_config, hybrid_state, load_vectors, start_live_server

ORDER = {"order": {"sku": "X-1", "qty": 2, "customer": "Zoë"}}


@dataclass
class Shop:
    """The live app behind the proxy, and what the app executed."""

    live: LiveServer
    proxy: AttackProxy
    executed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str) -> int:
        with self.lock:
            return self.executed.count(what)


def open_shop(flask_app: Flask) -> Shop:
    """Add the counting views to ``flask_app``, serve it, and put a proxy in front."""
    executed: list[str] = []
    lock = threading.Lock()

    @flask_app.post("/api/order")
    def order() -> dict[str, Any]:
        with lock:
            executed.append("order")
        return {"ordered": request.get_json()}

    @flask_app.post("/api/lookalike")
    def lookalike() -> tuple[dict[str, str], int]:
        with lock:
            executed.append("lookalike")
        return {"error": "unknown_key", "message": "the app's own answer"}, 401

    @flask_app.delete("/api/order/<int:order_id>")
    def cancel(order_id: int) -> dict[str, Any]:
        with lock:
            executed.append("cancel")
        return {"cancelled": order_id}

    live = start_live_server(flask_app)
    proxy = AttackProxy(live.url).start()
    return Shop(live, proxy, executed, lock)


def close_shop(shop: Shop) -> None:
    shop.proxy.close()
    shop.live.stop()


@pytest.fixture(scope="module")
def module_shop(vector_keys: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """One shop for the attacks (they change nothing server side)."""
    flask_app = demo.create_app(base_config(vector_keys))
    flask_app.instance_path = str(tmp_path_factory.mktemp("instance"))
    shop = open_shop(flask_app)
    yield shop
    close_shop(shop)


@pytest.fixture
def shop(module_shop: Shop) -> Iterator[Shop]:
    module_shop.proxy.mode = "pass"
    module_shop.proxy.refusal_code = "unknown_key"
    module_shop.proxy.attacked = 0
    with module_shop.lock:
        module_shop.executed.clear()
    yield module_shop
    module_shop.proxy.mode = "pass"


@pytest.fixture
def own_shop(make_app: Callable[..., Flask]) -> Iterator[Shop]:
    """A shop of the test's own, for tests that change the server (rotate its keys)."""
    shop = open_shop(make_app())
    yield shop
    close_shop(shop)


class Counter(HTTPAdapter):
    """Counts what the client sent, by (method, path)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((str(request.method), request.path_url))
        return super().send(request, *args, **kwargs)


@pytest.fixture
def client_factory() -> Iterator[Callable[..., tuple[HybridSession, Counter]]]:
    opened: list[HybridSession] = []

    def factory(base_url: str, **options: Any) -> tuple[HybridSession, Counter]:
        session = HybridSession(base_url, **options)
        counter = Counter()
        session.mount("http://", counter)
        opened.append(session)
        return session, counter

    yield factory
    for session in opened:
        session.close()


FORMATS = [
    pytest.param({"format": "session"}, id="S"),
    pytest.param({"format": "session", "reuse_key": True}, id="S-reuse"),
    pytest.param({"format": "envelope", "envelope_padding": "oaep"}, id="E-oaep"),
    pytest.param({"format": "envelope", "envelope_padding": "pkcs1v15"}, id="E-pkcs1v15"),
    pytest.param({"format": "envelope", "encrypt_response": False}, id="E-plaintext-answers"),
    pytest.param({"format": "jwe"}, id="J"),
    pytest.param({"format": "jwe", "reuse_key": True}, id="J-reuse"),
]
BODILESS_FORMATS = [param for param in FORMATS if param.values[0]["format"] != "envelope"]
IDENTITY_FORMATS = [param for param in FORMATS if param.values[0]["format"] != "session"]
ATTACKS = ["unsigned-unknown_key", "unsigned-invalid_session", "replayed-refusal", "200-to-204"]


def capture_genuine_refusal(shop: Shop, code: str) -> None:
    """Send, through the proxy in "pass" mode, a request the server refuses with ``code``.

    The refusal is genuine and signed, but bound to this request, not to the client's.
    """
    digest_headers: dict[str, str]
    if code == "invalid_session":  # an S envelope under a token that names no session
        names_and_sizes = {"encryptedAesKey": 256, "encryptedData": 16, "iv": 12, "authTag": 16}
        body = json.dumps(
            {name: b64encode(os.urandom(size)) for name, size in names_and_sizes.items()}
        ).encode()
        digest_headers = {
            "Content-Type": "application/json",
            "X-Encryption-Enabled": "true",
            "Authorization": "Bearer not-a-session-token",
            "X-Device-Id": "attacker",
        }
    else:  # a J request to a kid the server does not have
        public_key = rsa.load_public_key(load_vectors("keys")["session"]["public_pem"])
        token, _ = j_token(public_key, j_header("A" * 43, "POST", "/api/order"), b"{}")
        body = token.encode()
        digest_headers = {"Content-Type": "application/jose"}
    shop.proxy.mode = "pass"
    executed_before = shop.count("order")
    response = requests.post(
        f"{shop.proxy.url}/api/order",
        data=body,
        headers={**digest_headers, "Content-Digest": content_digest(body)},
        timeout=30,
    )
    assert response.status_code == 401 and response.json()["error"] == code
    captured = shop.proxy.captured
    assert captured is not None
    status, headers, captured_body = captured
    assert (status, captured_body) == (401, response.content)
    assert "signature-input" in {name.lower() for name, _ in headers}, "the refusal is not signed"
    assert shop.count("order") == executed_before  # refused: the app never saw it


def arm(shop: Shop, attack: str, format: str) -> None:
    """Set the proxy up for ``attack`` (capturing a refusal the client would retry on)."""
    if attack.startswith("unsigned-"):
        shop.proxy.refusal_code = attack.removeprefix("unsigned-")
        shop.proxy.mode = "unsigned_refusal"
    elif attack == "replayed-refusal":
        capture_genuine_refusal(shop, "invalid_session" if format == "session" else "unknown_key")
        shop.proxy.mode = "replayed_refusal"
    else:
        shop.proxy.mode = "no_content"


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("options", FORMATS)
def test_forged_answer_to_an_order_is_raised_and_the_order_runs_once(
    shop: Shop, client_factory: Callable, options: dict[str, Any], attack: str
) -> None:
    session, counter = client_factory(shop.proxy.url, **options)
    assert session.post("/api/order", json={"warm": "up"}).json() == {"ordered": {"warm": "up"}}
    arm(shop, attack, options["format"])
    with shop.lock:
        shop.executed.clear()

    with pytest.raises(SignatureError) as caught:
        session.post("/api/order", json=ORDER)

    assert caught.value.code == "invalid_signature"
    assert shop.count("order") == 1
    assert shop.proxy.attacked == 1
    assert counter.sent.count(("POST", "/api/order")) == 2  # the warm-up and the order, no retry
    assert counter.sent.count(("POST", "/hybrid/session")) == (options["format"] == "session")
    assert counter.sent.count(("GET", "/hybrid/jwks.json")) == 1


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("options", BODILESS_FORMATS)
def test_forged_answer_to_a_bodiless_request_is_raised_and_it_runs_once(
    shop: Shop, client_factory: Callable, options: dict[str, Any], attack: str
) -> None:
    session, counter = client_factory(shop.proxy.url, **options)
    assert session.delete("/api/order/7").json() == {"cancelled": 7}
    arm(shop, attack, options["format"])
    with shop.lock:
        shop.executed.clear()

    with pytest.raises(SignatureError):
        session.delete("/api/order/8")

    assert shop.count("cancel") == 1
    assert shop.proxy.attacked == 1
    assert counter.sent.count(("DELETE", "/api/order/8")) == 1


@pytest.mark.parametrize("options", FORMATS)
def test_without_verification_a_forged_refusal_is_raised_never_retried(
    shop: Shop, client_factory: Callable, options: dict[str, Any]
) -> None:
    session, counter = client_factory(shop.proxy.url, verify_signatures=False, **options)
    session.post("/api/order", json={"warm": "up"})
    shop.proxy.refusal_code = "invalid_session" if options["format"] == "session" else "unknown_key"
    shop.proxy.mode = "unsigned_refusal"
    with shop.lock:
        shop.executed.clear()
    expected = InvalidSessionError if options["format"] == "session" else UnknownKeyError
    with pytest.raises(expected) as caught:
        session.post("/api/order", json=ORDER)
    assert caught.value.verified is False
    assert shop.count("order") == 1
    assert counter.sent.count(("POST", "/api/order")) == 2


@pytest.mark.parametrize("options", [FORMATS[0], FORMATS[1]])
def test_genuine_invalid_session_of_this_request_is_verified_and_retried_once(
    shop: Shop, client_factory: Callable, options: dict[str, Any]
) -> None:
    session, counter = client_factory(shop.proxy.url, **options)
    session.post("/api/order", json={"warm": "up"})
    first = session.session_id
    token = session._session.token  # type: ignore[union-attr]
    ended = requests.delete(
        f"{shop.live.url}/hybrid/session",
        headers={
            "Authorization": f"Bearer {token}",
            "X-Device-Id": session.device_id,
            "Content-Digest": content_digest(b""),
        },
        timeout=30,
    )
    assert ended.status_code == 204
    with shop.lock:
        shop.executed.clear()

    assert session.post("/api/order", json=ORDER).json() == {"ordered": ORDER}

    assert shop.count("order") == 1
    assert counter.sent.count(("POST", "/api/order")) == 3  # warm-up, refused, retried
    assert counter.sent.count(("POST", "/hybrid/session")) == 2
    assert session.session_id not in (None, first)
    assert shop.proxy.attacked == 0


@pytest.mark.parametrize("options", IDENTITY_FORMATS)
def test_genuine_unknown_key_after_rotation_is_verified_and_retried_once(
    own_shop: Shop, client_factory: Callable, options: dict[str, Any], vector_keys: dict
) -> None:
    session, counter = client_factory(own_shop.proxy.url, **options)
    session.post("/api/order", json={"warm": "up"})  # encrypts to identity_1, the current key
    state = hybrid_state(own_shop.live.app)
    state.keyring = KeyRing([rsa.load_private_key(vector_keys["identity_2"]["private_pem"])])
    with own_shop.lock:
        own_shop.executed.clear()

    assert session.post("/api/order", json=ORDER).json() == {"ordered": ORDER}

    assert own_shop.count("order") == 1
    assert counter.sent.count(("POST", "/api/order")) == 3  # warm-up, refused, retried
    assert counter.sent.count(("GET", "/hybrid/jwks.json")) == 2


@pytest.mark.parametrize("options", FORMATS)
def test_apps_answer_that_looks_like_a_refusal_is_returned_not_retried(
    shop: Shop, client_factory: Callable, options: dict[str, Any]
) -> None:
    """Only flask-hybrid's refusals carry a signed X-Hybrid-Refusal; the app's never do."""
    session, counter = client_factory(shop.proxy.url, **options)
    response = session.post("/api/lookalike", json={})
    assert response.status_code == 401
    assert response.json()["error"] == "unknown_key"
    assert shop.count("lookalike") == 1
    assert counter.sent.count(("POST", "/api/lookalike")) == 1


def test_proxy_passes_everything_through_unchanged(shop: Shop) -> None:
    """In "pass" mode the proxy is transparent and adds no header of its own."""
    direct = requests.get(f"{shop.live.url}/hybrid/jwks.json", timeout=30)
    proxied = requests.get(f"{shop.proxy.url}/hybrid/jwks.json", timeout=30)
    assert (proxied.status_code, proxied.content) == (200, direct.content)
    ignored = {"date", "connection", "keep-alive"}
    assert {k.lower() for k in proxied.headers} - ignored == {
        k.lower() for k in direct.headers
    } - ignored
    preflight = requests.options(
        f"{shop.proxy.url}/api/order",
        headers={"Origin": "http://page.test", "Access-Control-Request-Method": "POST"},
        timeout=30,
    )
    shop.proxy.mode = "no_content"
    assert requests.options(f"{shop.proxy.url}/api/order", timeout=30).status_code == (
        preflight.status_code
    )
    assert shop.proxy.attacked == 0


def test_proxy_forgeries(shop: Shop) -> None:
    """What each mode sends, and that the app still runs what was forwarded."""
    body = b'{"n":1}'
    shop.proxy.mode = "unsigned_refusal"
    shop.proxy.refusal_code = "invalid_session"
    forged = requests.post(f"{shop.proxy.url}/api/order", data=body, timeout=30)
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_session"
    assert forged.headers["X-Hybrid-Refusal"] == "invalid_session"
    assert "Signature" not in forged.headers and "X-Response-Signature" not in forged.headers
    shop.proxy.mode = "no_content"
    empty = requests.post(
        f"{shop.proxy.url}/api/order",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert (empty.status_code, empty.content) == (204, b"")
    assert "Content-Type" not in empty.headers
    shop.proxy.capture_refusal(409, {"Content-Type": "application/json", "X-Kept": "1"}, b"{}")
    shop.proxy.mode = "replayed_refusal"
    replayed = requests.post(f"{shop.proxy.url}/api/order", data=body, timeout=30)
    assert (replayed.status_code, replayed.content, replayed.headers["X-Kept"]) == (409, b"{}", "1")
    assert shop.proxy.attacked == 3
    assert shop.count("order") == 3  # each forgery came after the app had run the request


@pytest.mark.parametrize("options", [p for p in FORMATS if p.id != "E-plaintext-answers"])
def test_an_earlier_sealed_answer_replayed_for_a_later_order_is_refused(
    shop: Shop, client_factory: Callable, options: dict[str, Any]
) -> None:
    """With a reused CEK an earlier sealed answer opens too: only S's request-bound signature
    (S's seal names no request) and J's ``req`` tell the client it answers another order."""
    session, _ = client_factory(shop.proxy.url, **options)
    first = session.post("/api/order", json={"order": "first"})
    assert first.json() == {"ordered": {"order": "first"}}
    shop.proxy.mode = "replayed_answer"
    with pytest.raises((SignatureError, ResponseError)):
        session.post("/api/order", json={"order": "second"})
    assert shop.count("order") == 2 and shop.proxy.attacked == 1
