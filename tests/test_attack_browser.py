"""Issue 7 §1 for the browser module: hybrid.js behind a proxy after TLS, in Node and Chromium.

A live app whose ``POST /api/order`` counts its executions (per format) sits behind
:class:`tests.attack_proxy.AttackProxy`. The proxy forwards each order, so the app executes it,
then drops the real answer and sends a forgery: an unsigned refusal (``unknown_key``,
``invalid_session``), a genuine signed refusal captured from another request, or an empty 204.
hybrid.js must reject with ``invalid_signature``, never send the order again, and the app must
have executed it exactly once. A genuine refusal of the order itself is still verified and
retried.

The same steps (tests/js/attack_driver.mjs) run in Node (tests/js/attack_client.mjs) and in
headless Chromium on a page served by the app's own origin while the API is reached through the
proxy, another origin: so the browser reads the signatures through CORS
(``Access-Control-Expose-Headers``), as a page calling an API elsewhere does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, request
from flask_cors import CORS
from playwright.sync_api import Browser, Page

import app as demo

from .attack_proxy import AttackProxy
from .conftest import LiveServer, base_config, start_live_server

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "js" / "attack_driver.mjs"
NODE_CLIENT = ROOT / "tests" / "js" / "attack_client.mjs"
TIMEOUT_MS = 20_000

#: The page: hybrid.js and the driver from the app's origin; the API is given as another origin.
PAGE = """<!doctype html>
<meta charset="utf-8"><title>flask-hybrid attack test</title>
<script src="/static/vendor/jsencrypt.min.js"></script>
<script type="module">
  import * as hybrid from "/hybrid/static/hybrid.js";
  import { placeOrder } from "/attack/driver.mjs";
  const jsencryptFor = (format) => (format === "envelope" ? new JSEncrypt() : undefined);
  window.placeOrder = (options) =>
    placeOrder(hybrid, { ...options, jsencrypt: jsencryptFor(options.format) });
  document.body.dataset.ready = "true";
</script>
<body></body>
"""

FORMATS = ["jwe", "session", "envelope"]
ATTACKS = ["unsigned-unknown_key", "unsigned-invalid_session", "replayed-refusal", "200-to-204"]


@dataclass
class Shop:
    """The live app, the proxy in front of it, and the orders the app executed (by format)."""

    live: LiveServer
    proxy: AttackProxy
    executed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def runs(self, format: str) -> int:
        with self.lock:
            return self.executed.count(format)


def shop_app(vector_keys: dict[str, Any], instance_path: Path, shop_holder: list[Shop]) -> Flask:
    """The demo app with CORS, a counting ``POST /api/order`` and the test page."""
    flask_app = demo.create_app(base_config(vector_keys))
    flask_app.instance_path = str(instance_path)
    CORS(flask_app)  # any origin; requested headers allowed (Content-Digest, X-Hybrid-JWE, ...)

    @flask_app.post("/api/order")
    def order() -> dict[str, Any]:
        placed = request.get_json()
        shop = shop_holder[0]
        with shop.lock:
            shop.executed.append(str(placed.get("format")))
        return {"ordered": placed}

    @flask_app.get("/attack/")
    def page() -> Response:
        return Response(PAGE, mimetype="text/html")

    @flask_app.get("/attack/driver.mjs")
    def driver() -> Response:
        return Response(DRIVER.read_text(encoding="utf-8"), mimetype="text/javascript")

    return flask_app


@pytest.fixture(scope="module")
def module_shop(
    vector_keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    holder: list[Shop] = []
    flask_app = shop_app(vector_keys, tmp_path_factory.mktemp("instance"), holder)
    live = start_live_server(flask_app)
    proxy = AttackProxy(live.url).start()
    holder.append(Shop(live, proxy))
    yield holder[0]
    proxy.close()
    live.stop()


@pytest.fixture
def shop(module_shop: Shop) -> Iterator[Shop]:
    """The shared shop, its proxy passing, nothing executed yet."""
    module_shop.proxy.mode = "pass"
    module_shop.proxy.refusal_code = "unknown_key"
    module_shop.proxy.attacked = 0
    with module_shop.lock:
        module_shop.executed.clear()
    yield module_shop
    module_shop.proxy.mode = "pass"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def capture_genuine_refusal(shop: Shop, code: str) -> None:
    """Have the server refuse another request with ``code``, through the proxy, which keeps it.

    The refusal is genuine and signed, but bound to that request. It is asked for with the
    page's ``Origin``, so it carries the CORS headers a browser needs to read it when replayed.
    """
    if code == "invalid_session":  # an S envelope under a token that names no session
        sizes = {"encryptedAesKey": 256, "encryptedData": 16, "iv": 12, "authTag": 16}
        envelope = {name: b64(os.urandom(size)) for name, size in sizes.items()}
        headers = {"Authorization": "Bearer not-a-session-token", "X-Device-Id": "attacker"}
    else:  # an E envelope naming a kid the server does not have
        sizes = {"ek": 256, "iv": 12, "ct": 32}
        envelope = {"alg": "RSA-OAEP-256+AES-GCM", "kid": "A" * 43}
        envelope.update({name: b64(os.urandom(size)) for name, size in sizes.items()})
        headers = {}
    body = json.dumps(envelope).encode()
    digest = b64(hashlib.sha256(body).digest())
    shop.proxy.mode = "pass"
    answer = requests.post(
        f"{shop.proxy.url}/api/order",
        data=body,
        headers={
            **headers,
            "Content-Type": "application/json",
            "X-Encryption-Enabled": "true",
            "Content-Digest": f"sha-256=:{digest}:",
            "Origin": shop.live.url,
        },
        timeout=30,
    )
    assert (answer.status_code, answer.json()["error"]) == (401, code)
    assert "Signature-Input" in answer.headers, "the server does not sign its refusals"
    captured = shop.proxy.captured
    assert captured is not None and captured[2] == answer.content


def arm(shop: Shop, attack: str, format: str) -> None:
    """Set the proxy up for ``attack`` on the next order."""
    if attack.startswith("unsigned-"):
        shop.proxy.refusal_code = attack.removeprefix("unsigned-")
        shop.proxy.mode = "unsigned_refusal"
    elif attack == "replayed-refusal":
        capture_genuine_refusal(shop, "invalid_session" if format == "session" else "unknown_key")
        shop.proxy.mode = "replayed_refusal"
    else:
        shop.proxy.mode = "no_content"
    shop.proxy.attacked = 0


def assert_rejected_and_ran_once(result: dict[str, Any], shop: Shop, format: str) -> None:
    assert result["ok"] is False, result
    assert (result["name"], result["code"]) == ("HybridError", "invalid_signature"), result
    assert result["sent"].count("POST /api/order") == 1, result["sent"]  # never sent again
    assert shop.runs(format) == 1, shop.executed
    assert shop.proxy.attacked == 1


def assert_verified_and_retried_once(result: dict[str, Any], shop: Shop, format: str) -> None:
    assert result["ok"] is True, result
    assert result["status"] == 200
    assert result["body"]["ordered"]["format"] == format
    assert result["sent"].count("POST /api/order") == 2, result["sent"]  # refused, then retried
    code = "invalid_session" if format == "session" else "unknown_key"
    requests_made = [ex for ex in result["exchanges"] if ex["kind"] == "request"]
    # S's sealed answers are signed as well (its seal names no request): checked, so "valid".
    sealed_answer = "valid" if format == "session" else "not-needed"
    assert requests_made == [
        {"kind": "request", "status": 401, "signature": "valid", "error": code},
        {"kind": "request", "status": 200, "signature": sealed_answer, "error": None},
    ]
    assert shop.runs(format) == 1, shop.executed  # the refused attempt never reached the app
    assert shop.proxy.attacked == 0


# -- Node ---------------------------------------------------------------------------------------


def run_in_node(shop: Shop, **options: Any) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "Node.js is required for the browser module's tests"
    completed = subprocess.run(
        [node, str(NODE_CLIENT), json.dumps({"baseUrl": shop.proxy.url, **options})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    return result


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("format", FORMATS)
def test_node_client_rejects_a_forged_answer_and_the_order_runs_once(
    shop: Shop, format: str, attack: str
) -> None:
    arm(shop, attack, format)
    assert_rejected_and_ran_once(run_in_node(shop, format=format), shop, format)


def test_node_client_rejects_a_204_that_keeps_the_real_answer_signature(shop: Shop) -> None:
    """Format E's plain answers are signed: a 204 with the real 200's signature headers fails."""
    arm(shop, "200-to-204", "envelope")
    result = run_in_node(shop, format="envelope", encryptResponse=False)
    assert_rejected_and_ran_once(result, shop, "envelope")


@pytest.mark.parametrize("format", FORMATS)
def test_node_client_verifies_and_retries_a_genuine_refusal(shop: Shop, format: str) -> None:
    result = run_in_node(shop, format=format, provoke=True)
    assert_verified_and_retried_once(result, shop, format)


# -- Chromium (the page on the app's origin, the API through the proxy: cross-origin) -----------


@pytest.fixture(scope="module")
def page(browser: Browser, module_shop: Shop) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    page_errors: list[str] = []
    opened.on("pageerror", lambda error: page_errors.append(str(error)))
    opened.goto(f"{module_shop.live.url}/attack/")
    opened.wait_for_selector("body[data-ready='true']", state="attached")
    yield opened
    context.close()
    assert page_errors == []


def run_in_chromium(page: Page, shop: Shop, **options: Any) -> dict[str, Any]:
    assert shop.proxy.url != shop.live.url  # two origins: the API is cross-origin to the page
    result: dict[str, Any] = page.evaluate(
        "options => window.placeOrder(options)", {"baseUrl": shop.proxy.url, **options}
    )
    return result


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("format", FORMATS)
def test_chromium_client_rejects_a_forged_answer_and_the_order_runs_once(
    shop: Shop, page: Page, format: str, attack: str
) -> None:
    arm(shop, attack, format)
    assert_rejected_and_ran_once(run_in_chromium(page, shop, format=format), shop, format)


@pytest.mark.parametrize("format", FORMATS)
def test_chromium_client_verifies_and_retries_a_genuine_refusal_across_origins(
    shop: Shop, page: Page, format: str
) -> None:
    result = run_in_chromium(page, shop, format=format, provoke=True)
    assert_verified_and_retried_once(result, shop, format)
