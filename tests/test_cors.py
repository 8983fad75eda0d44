"""Cross-origin use in real headless Chromium: the API on one origin, the page on another.

The API (origin A, ``http://127.0.0.1:<port>``) is the demo app with flask-hybrid and Flask-CORS
(``CORS(app, origins=[origin B], expose_headers=["X-Request-Id"])``). The page (origin B,
``http://localhost:<port>``, another host name and port) imports the browser module from origin A
and talks to it with ``HybridClient.connect({format, baseUrl: origin A})``. Every answer of the
API, refusals included, must carry ``Access-Control-Allow-Origin`` (refusals go through Flask, so
Flask-CORS's ``after_request`` applies) and list flask-hybrid's own headers in
``Access-Control-Expose-Headers`` beside the app's; otherwise the browser hides the answer and
the client sees ``TypeError: Failed to fetch`` or cannot check a signature.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, Response
from flask_cors import CORS
from playwright.sync_api import Browser, ConsoleMessage, Page
from werkzeug.serving import BaseWSGIServer, make_server

from .conftest import LiveServer, start_live_server
from .test_demo_page import TIMEOUT_MS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

VENDOR = Path(__file__).resolve().parents[1] / "frontend" / "static" / "vendor"

#: The app's own header, exposed by its own Flask-CORS configuration.
APP_HEADER = "X-Request-Id"
#: flask-hybrid's response headers, which it lists in Access-Control-Expose-Headers when present.
HYBRID_HEADERS = (
    "Signature",
    "Signature-Input",
    "Content-Digest",
    "X-Response-Signature",
    "X-Response-Signature-Kid",
    "X-Plaintext-Content-Type",
    "X-Encryption-Enabled",
    "Retry-After",
)

# The page on origin B. It loads JSEncrypt from its own origin and the browser module from the
# API's; the module script is fetched in CORS mode, so origin A must allow origin B for it too.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cross-origin client</title>
<script src="/jsencrypt.min.js"></script>
<script type="module">
import {
  HybridClient, HybridError, b64decode, b64encode, b64urlDecode, b64urlEncode,
} from "API_ORIGIN/hybrid/static/hybrid.js";

const API = "API_ORIGIN";
const ORDER = { zulu: 1, poNumber: "PO-7", lines: [{ sku: "NW-1", qty: 2 }], note: "Grüße ✓" };
const exchanges = [];

/** A rejection as plain data. */
function failure(err) {
  return {
    hybrid: err instanceof HybridError,
    name: err.name,
    code: err.code ?? null,
    status: err.status ?? null,
    retryAfter: err.retryAfter ?? null,
    message: String(err.message),
  };
}

/** What the test needs of an ExchangeInfo. */
function exchangeSummary(ex) {
  const path = new URL(ex.url).pathname;
  return { kind: ex.kind, method: ex.method, path, status: ex.status, sealed: ex.sealed,
           signature: ex.signature, error: ex.error ? ex.error.code : null,
           refusal: ex.error ? ex.responseBody : null };
}

function options({ format, wrap = null, seal = null, tamper = false }) {
  const opts = { format, baseUrl: API, onExchange: (ex) => exchanges.push(exchangeSummary(ex)) };
  if (wrap === "jsencrypt") opts.jsencrypt = new window.JSEncrypt();
  if (seal !== null) opts.encryptResponse = seal;
  if (tamper) opts.beforeSend = flipOneByte;
  return opts;
}

/** beforeSend: flip one byte of the ciphertext, as something on the path would. */
function flipOneByte(wire) {
  if (wire.body.startsWith("ey")) {  // format J: a JWE compact, the 4th segment
    const parts = wire.body.split(".");
    const bytes = b64urlDecode(parts[3]);
    bytes[0] ^= 0xff;
    parts[3] = b64urlEncode(bytes);
    wire.body = parts.join(".");
    return;
  }
  const envelope = JSON.parse(wire.body);  // S: encryptedData, E: ct
  const member = "encryptedData" in envelope ? "encryptedData" : "ct";
  const bytes = b64decode(envelope[member]);
  bytes[0] ^= 0xff;
  envelope[member] = b64encode(bytes);
  wire.body = JSON.stringify(envelope);
}

async function post(client) {
  const res = await client.fetch("/api/echo", { method: "POST", body: JSON.stringify(ORDER) });
  return {
    status: res.status,
    text: await res.text(),
    appHeader: res.headers.get("APP_HEADER"),
    contentType: res.headers.get("content-type"),
  };
}

let client = null;

window.run = {
  order: ORDER,
  exchanges,
  /** Connect, send the order, close; the answer as the page read it. */
  async roundTrip(args) {
    const roundClient = await HybridClient.connect(options(args));
    try {
      return await post(roundClient);
    } finally {
      await roundClient.close();
    }
  },
  /** Connect and keep the client for `send`: the test changes the server in between. */
  async connect(args) {
    try {
      client = await HybridClient.connect(options(args));
      return { kid: client.kid };
    } catch (err) {
      return { error: failure(err) };
    }
  },
  async send() {
    try {
      return { answer: await post(client), kid: client.kid };
    } catch (err) {
      return { error: failure(err) };
    }
  },
};
document.body.dataset.ready = "true";
</script>
</head>
<body></body>
</html>
"""


class Switch:
    """A WSGI app that hands each request to ``app``, which a test may replace: a redeploy."""

    def __init__(self) -> None:
        self.app: WSGIApplication | None = None
        self.seen: list[tuple[str, str]] = []

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        self.seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        assert self.app is not None, "no API app deployed"
        return self.app(environ, start_response)


@dataclass
class Origins:
    """The two live servers and the page on origin B."""

    page: Page
    api_url: str
    page_url: str
    switch: Switch
    deploy: Callable[..., Flask]
    responses: list[dict[str, Any]] = field(default_factory=list)
    console_errors: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def run(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self.page.evaluate(f"args => window.run.{name}(args)", args or {})

    def exchanges(self) -> list[dict[str, Any]]:
        return self.page.evaluate("() => window.run.exchanges")

    def api_responses(self) -> list[dict[str, Any]]:
        """The answers of origin A as the network saw them (Chromium does not report preflights)."""
        return [r for r in self.responses if r["url"].startswith(self.api_url + "/")]


def serve(wsgi_app: WSGIApplication) -> tuple[BaseWSGIServer, str]:
    """A live server for any WSGI app (``start_live_server`` takes a Flask app)."""
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def page_app(api_origin: str) -> Flask:
    """Origin B: the page, and its own copy of JSEncrypt."""
    app = Flask(__name__, static_folder=None)

    @app.get("/")
    def index() -> Response:
        html = PAGE.replace("API_ORIGIN", api_origin).replace("APP_HEADER", APP_HEADER)
        return Response(html, content_type="text/html; charset=utf-8")

    @app.get("/jsencrypt.min.js")
    def jsencrypt() -> Response:
        script = (VENDOR / "jsencrypt.min.js").read_bytes()
        return Response(script, content_type="text/javascript")

    return app


@pytest.fixture
def origins(browser: Browser, make_app: Callable[..., Flask]) -> Iterator[Origins]:
    switch = Switch()
    api_server, api_url = serve(switch)
    # Origin B by another host name: "localhost", served on 127.0.0.1 all the same.
    page_live: LiveServer = start_live_server(page_app(api_url))
    page_url = f"http://localhost:{page_live.server.server_port}"

    def deploy(**overrides: Any) -> Flask:
        """Put a new API app behind origin A: the demo app, Flask-CORS and the app's own header."""
        api = make_app(**overrides)
        CORS(api, origins=[page_url], expose_headers=[APP_HEADER])

        @api.after_request
        def add_request_id(response: Response) -> Response:
            response.headers[APP_HEADER] = "req-42"
            return response

        switch.app = api
        return api

    deploy()
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    state = Origins(page, api_url, page_url, switch, deploy)
    page.on("console", lambda m: state.console_errors.append(m) if m.type == "error" else None)
    page.on("pageerror", lambda exc: state.page_errors.append(str(exc)))
    page.on(
        "response",
        lambda response: state.responses.append(
            {
                "url": response.url,
                "method": response.request.method,
                "status": response.status,
                "headers": response.headers,  # no round trip: recorded in order
                "sent": response.request.post_data or "",
            }
        ),
    )
    try:
        page.goto(page_url + "/")
        try:
            page.wait_for_selector("body[data-ready='true']", state="attached")
        except Exception:
            pytest.fail(
                f"the page on {page_url} could not load hybrid.js from {api_url}: "
                f"{[m.text for m in state.console_errors]} {state.page_errors}"
            )
        yield state
    finally:
        context.close()
        page_live.stop()
        api_server.shutdown()
        api_server.server_close()


def exposed(headers: dict[str, str]) -> set[str]:
    value = headers.get("access-control-expose-headers", "")
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def assert_cors_answers(origins: Origins) -> set[str]:
    """Every answer of origin A allows origin B and exposes the app's header and ours that it
    carries; returns the names of flask-hybrid's headers that were seen at all."""
    seen: set[str] = set()
    answers = origins.api_responses()
    assert answers
    for answer in answers:
        headers = answer["headers"]
        where = f"{answer['method']} {answer['url']} {answer['status']}"
        assert headers.get("access-control-allow-origin") == origins.page_url, where
        listed = exposed(headers)
        assert APP_HEADER.lower() in listed, where
        for name in HYBRID_HEADERS:
            if name.lower() in headers:
                seen.add(name)
                assert name.lower() in listed, f"{where}: {name} not exposed ({listed})"
    return seen


def assert_clean(origins: Origins) -> None:
    """No script error, and no console error but Chromium's line for each expected 4xx."""
    assert not origins.page_errors, origins.page_errors
    expected = "the server responded with a status of 4"
    unexpected = [m.text for m in origins.console_errors if expected not in m.text]
    assert not unexpected, unexpected


# -- (1) A sealed round trip in every format ----------------------------------------------------

ROUND_TRIPS = [
    pytest.param({"format": "jwe"}, "application/jose", id="jwe"),
    pytest.param({"format": "session"}, "application/json", id="session"),
    pytest.param({"format": "envelope", "wrap": "oaep"}, "application/json", id="envelope-oaep"),
    pytest.param(
        {"format": "envelope", "wrap": "jsencrypt"}, "application/json", id="envelope-jsencrypt"
    ),
    # Format E answered in clear: the page trusts it only through its (exposed) signature.
    pytest.param(
        {"format": "envelope", "wrap": "oaep", "seal": False}, None, id="envelope-oaep-clear"
    ),
]


@pytest.mark.parametrize(("args", "wire_type"), ROUND_TRIPS)
def test_round_trip_from_another_origin(
    origins: Origins, args: dict[str, Any], wire_type: str | None
) -> None:
    answer = origins.run("roundTrip", args)
    order = origins.page.evaluate("() => window.run.order")
    assert answer["status"] == 200
    assert json.loads(answer["text"]) == {"received": order}
    assert answer["appHeader"] == "req-42"  # the app's own exposed header still reads
    assert answer["contentType"].startswith("application/json")  # the plaintext's, restored

    request = next(ex for ex in origins.exchanges() if ex["kind"] == "request")
    assert request["error"] is None and request["status"] == 200
    sealed = args.get("seal") is not False
    assert request["sealed"] is sealed
    # S's sealed answers are signed too (its seal names no request), E's clear ones must be.
    signed = not sealed or args["format"] == "session"
    assert request["signature"] == ("valid" if signed else "not-needed")

    echo = [r for r in origins.api_responses() if r["url"].endswith("/api/echo")]
    posts = [r for r in echo if r["method"] == "POST"]
    assert len(posts) == 1
    assert "PO-7" not in posts[0]["sent"]  # the request body left the page encrypted
    if wire_type is not None:
        assert posts[0]["headers"]["content-type"].startswith(wire_type)
    # Not a simple request (its content type and headers): the browser asked origin A first.
    assert ("OPTIONS", "/api/echo") in origins.switch.seen
    seen = assert_cors_answers(origins)
    if not sealed:
        assert {"Signature", "Signature-Input", "Content-Digest"} <= seen
    if args["format"] == "session":  # the handshake's and the DELETE's answers are signed
        assert {"Signature", "Signature-Input", "Content-Digest", "X-Encryption-Enabled"} <= seen
        kinds = [ex["kind"] for ex in origins.exchanges()]
        assert kinds == ["handshake", "request", "close"]
        signed = [ex["signature"] for ex in origins.exchanges() if ex["kind"] != "request"]
        assert signed == ["valid", "valid"]
    assert_clean(origins)


# -- (2) A refusal the client reads ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jwe", "session", "envelope"])
def test_refusal_reaches_the_client_with_its_code(origins: Origins, fmt: str) -> None:
    assert "error" not in origins.run("connect", {"format": fmt, "tamper": True})
    outcome = origins.run("send")
    error = outcome["error"]
    assert error["hybrid"] and error["name"] == "HybridError", outcome
    assert (error["code"], error["status"], error["retryAfter"]) == ("invalid_payload", 400, None)
    refused = [ex for ex in origins.exchanges() if ex["kind"] == "request"]
    assert [ex["error"] for ex in refused] == ["invalid_payload"]  # not retried
    assert refused[0]["signature"] == "valid"  # its request-bound signature checked cross-origin
    assert json.loads(refused[0]["refusal"])["error"] == "invalid_payload"  # the body it read
    assert {"Signature", "Signature-Input", "Content-Digest"} <= assert_cors_answers(origins)
    assert_clean(origins)


# -- (3) unknown_key: keys refetched, the request retried ---------------------------------------


@pytest.mark.parametrize("fmt", ["jwe", "envelope"])
def test_unknown_key_refetches_and_retries(
    origins: Origins, vector_keys: dict[str, Any], fmt: str
) -> None:
    connected = origins.run("connect", {"format": fmt})
    first_kid = connected["kid"]
    assert first_kid == vector_keys["identity_1"]["kid"]
    # Redeploy with identity_1 retired: the client still encrypts to it.
    origins.deploy(HYBRID_IDENTITY_KEYS=[vector_keys["identity_2"]["private_pem"]])
    origins.switch.seen.clear()

    outcome = origins.run("send")
    assert "error" not in outcome, outcome
    assert outcome["kid"] == vector_keys["identity_2"]["kid"]
    assert outcome["answer"]["status"] == 200
    assert json.loads(outcome["answer"]["text"])["received"]["poNumber"] == "PO-7"

    requests = [ex for ex in origins.exchanges() if ex["kind"] == "request"]
    assert [(ex["status"], ex["error"]) for ex in requests] == [(401, "unknown_key"), (200, None)]
    assert requests[0]["signature"] == "valid"  # only a verified refusal is retried
    key_path = "/hybrid/jwks.json" if fmt == "jwe" else "/hybrid/public-key"
    served = [seen for seen in origins.switch.seen if seen[0] != "OPTIONS"]
    assert served[0] == ("POST", "/api/echo")
    assert ("GET", key_path) in served[1:-1]
    assert served[-1] == ("POST", "/api/echo")
    assert_cors_answers(origins)
    assert_clean(origins)


# -- (4) Retry-After on 429 ----------------------------------------------------------------------


def test_rate_limited_handshake_gives_retry_after(origins: Origins) -> None:
    origins.deploy(HYBRID_HANDSHAKE_LIMIT="1 per minute")
    assert "error" not in origins.run("connect", {"format": "session"})
    outcome = origins.run("connect", {"format": "session"})  # a second handshake in the minute
    error = outcome["error"]
    assert error["hybrid"] and error["code"] == "rate_limited" and error["status"] == 429, error
    assert isinstance(error["retryAfter"], int) and 0 < error["retryAfter"] <= 60, error
    handshakes = [ex for ex in origins.exchanges() if ex["kind"] == "handshake"]
    assert [(ex["status"], ex["error"]) for ex in handshakes] == [
        (201, None),
        (429, "rate_limited"),
    ]
    assert handshakes[1]["signature"] == "valid"
    limited = next(r for r in origins.api_responses() if r["status"] == 429)
    assert int(limited["headers"]["retry-after"]) == error["retryAfter"]
    assert "Retry-After" in assert_cors_answers(origins)
    assert_clean(origins)


# -- (5) Access-Control-Expose-Headers ------------------------------------------------------------


def test_expose_headers_lists_the_app_and_the_extension_headers(origins: Origins) -> None:
    """One of each kind of answer; together they carry every header flask-hybrid exposes."""
    origins.run("roundTrip", {"format": "session"})  # X-Encryption-Enabled, X-Plaintext-...
    origins.run("roundTrip", {"format": "envelope", "wrap": "oaep", "seal": False})  # signed
    origins.run("connect", {"format": "jwe", "tamper": True})
    origins.run("send")  # a refusal
    origins.deploy(HYBRID_HANDSHAKE_LIMIT="1 per minute")
    origins.run("connect", {"format": "session"})
    origins.run("connect", {"format": "session"})  # 429, Retry-After
    assert assert_cors_answers(origins) == set(HYBRID_HEADERS)
    for answer in origins.api_responses():
        header = answer["headers"]["access-control-expose-headers"]
        # The app's own list comes first, unchanged; flask-hybrid's names follow, once each.
        names = [name.strip() for name in header.split(",")]
        assert names[0].lower() == APP_HEADER.lower(), header
        assert len({name.lower() for name in names}) == len(names), header
    assert_clean(origins)
