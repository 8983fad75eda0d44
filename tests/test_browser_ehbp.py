"""Format H (EHBP) in real headless Chromium: the browser module against the real middleware.

The demo app (format H on with its development HPKE key) plus ``/digest`` (size and SHA-256 of
the body as the view read it) and ``/download/<n>`` (n bytes in 64 KiB blocks) serves a page;
the module is imported from the blueprint's static URL and driven with ``page.evaluate``. Small
and multi-MiB bodies both ways (the answer read chunk by chunk), a stream upload (Chromium
refuses streamed uploads over HTTP/1.1: the module sends it buffered), tampered or stripped
answers refused, the 422 of a key the server does not hold retried once with refetched keys
(``page.route`` serves a stale key_config first), and the demo page's format H round trip. The
Node side (true streamed uploads, offline vectors and npm ehbp interop) runs from here too.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request
from playwright.sync_api import Browser, Page, Route

import app as demo
from flask_hybrid.core import ehbp, hpke

from .conftest import LiveServer, base_config, start_live_server
from .test_js import run_node_tests

MiB = 1024 * 1024
TIMEOUT_MS = 30_000
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"


def add_test_routes(flask_app: Flask) -> None:
    """``/digest`` and ``/download/<n>`` beside the demo's ``/api/echo``."""

    @flask_app.post("/digest")
    def digest() -> dict[str, Any]:
        seen = hashlib.sha256()
        size = 0
        while piece := request.stream.read(64 * 1024):
            seen.update(piece)
            size += len(piece)
        return {"size": size, "sha256": seen.hexdigest(), "format": "H"}

    @flask_app.route("/download/<int:size>", methods=["GET", "POST"])
    def download(size: int) -> Response:
        request.get_data()
        block = bytes(range(256)) * 256  # 64 KiB

        def blocks() -> Iterator[bytes]:
            for _ in range(size // len(block)):
                yield block

        return Response(blocks(), content_type="application/octet-stream")


@pytest.fixture(scope="module")
def h_live(
    vector_keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    flask_app = demo.create_app(base_config(vector_keys, HYBRID_MAX_BODY=32 * MiB))
    flask_app.instance_path = str(tmp_path_factory.mktemp("instance"))
    add_test_routes(flask_app)
    live = start_live_server(flask_app)
    yield live
    live.stop()


@pytest.fixture
def page(browser: Browser, h_live: LiveServer) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(h_live.url + "/")
    page.wait_for_selector("body[data-ready='true']")
    page.evaluate(
        """async () => {
            window.fh = await import("flask-hybrid");
            window.connect = (options = {}) =>
                fh.HybridClient.connect({ format: "ehbp", ...options });
        }"""
    )
    try:
        yield page
    finally:
        context.close()
    assert errors == []


def stale_key_config() -> bytes:
    return hpke.KeyConfig(0, hpke.HpkePrivateKey.generate().public_bytes).encode()


def test_small_json_round_trip_and_bodiless_request(page: Page, h_live: LiveServer) -> None:
    result = page.evaluate(
        """async () => {
            const client = await connect();
            const card = "4111 1111 1111 1111";
            const res = await client.fetch("/api/echo", { method: "POST", body: { card } });
            const json = await res.json();
            const ex = client.lastExchange;
            const plain = await client.fetch("/hybrid/jwks.json");
            return {
                kid: client.kid, status: res.status, json, type: res.headers.get("content-type"),
                sealed: ex.sealed, signature: ex.signature, format: ex.format, error: ex.error,
                enc: ex.requestHeaders["ehbp-encapsulated-key"], info: {
                    ...ex.ehbp,
                    requestHead: fh.bytesToHex(ex.ehbp.requestHead),
                    responseHead: fh.bytesToHex(ex.ehbp.responseHead),
                },
                plainStatus: plain.status, plainSealed: client.lastExchange.sealed,
                plainEnc: client.lastExchange.ehbp.encapsulatedKey,
            };
        }"""
    )
    with urllib.request.urlopen(h_live.url + ehbp.KEYS_PATH) as answer:
        assert result["kid"] == hpke.KeyConfig.parse(answer.read()).public_key.hex()
    assert result["status"] == 200 and result["json"] == {
        "received": {"card": "4111 1111 1111 1111"}
    }
    assert result["type"].startswith("application/json")
    assert (
        result["sealed"] is True and result["signature"] == "not-needed" and result["error"] is None
    )
    info = result["info"]
    assert result["enc"] == info["encapsulatedKey"] and len(info["encapsulatedKey"]) == 64
    assert len(info["responseNonce"]) == 64
    body = json.dumps({"card": "4111 1111 1111 1111"}, separators=(",", ":")).encode()
    assert info["requestFrames"] == [len(body) + 16]
    assert info["requestWireBytes"] == len(body) + 20
    assert info["requestHead"][:8] == f"{len(body) + 16:08x}"
    assert "4111" not in bytes.fromhex(info["requestHead"]).decode("latin-1")
    assert (
        sum(info["responseFrames"]) + 4 * len(info["responseFrames"]) == info["responseWireBytes"]
    )
    # a bodiless request is plain in EHBP: no key header, no seal
    assert result["plainStatus"] == 200 and result["plainSealed"] is False
    assert result["plainEnc"] is None


def test_several_mib_up_as_a_blob_and_down_chunk_by_chunk(page: Page) -> None:
    size = 6 * MiB
    result = page.evaluate(
        """async (size) => {
            const client = await connect();
            const bytes = new Uint8Array(size);
            for (let i = 0; i < size; i++) bytes[i] = (i * 7) % 251;
            const sha = await crypto.subtle.digest("SHA-256", bytes);
            const digest = fh.bytesToHex(new Uint8Array(sha));
            const up = await client.fetch("/digest", { method: "POST", body: new Blob([bytes]) });
            const upJson = await up.json();
            const frames = client.lastExchange.ehbp.requestFrames;
            const down = await client.fetch(`/download/${size}`, { method: "POST", body: "go" });
            const reader = down.body.getReader();
            let chunks = 0, total = 0, wrong = 0;
            for (;;) {
                const { done, value } = await reader.read();
                if (done) break;
                for (let i = 0; i < value.length; i++) if (value[i] !== (total + i) % 256) wrong++;
                chunks += 1;
                total += value.length;
            }
            return { digest, upJson, frames: frames.length, maxFrame: Math.max(...frames),
                     streamed: client.lastExchange.ehbp.streamedUpload, chunks, total, wrong,
                     responseFrames: client.lastExchange.ehbp.responseFrames.length };
        }""",
        size,
    )
    assert result["upJson"] == {"size": size, "sha256": result["digest"], "format": "H"}
    assert (
        result["frames"] == size // ehbp.FRAME_SIZE and result["maxFrame"] == ehbp.FRAME_SIZE + 16
    )
    assert result["total"] == size and result["wrong"] == 0
    assert result["responseFrames"] == size // ehbp.FRAME_SIZE
    assert result["chunks"] >= result["responseFrames"]  # one read per authenticated frame


@pytest.mark.parametrize("stream_uploads", ["auto", True], ids=["auto", "forced"])
def test_a_readable_stream_body_over_http1(page: Page, stream_uploads: str | bool) -> None:
    """Chromium streams uploads over HTTP/2+ only; over HTTP/1.1 the frames go in one body."""
    result = page.evaluate(
        """async (streamUploads) => {
            const client = await connect({ streamUploads });
            let n = 0;
            const body = new ReadableStream({
                pull(c) {
                    if (n++ === 20) c.close();
                    else c.enqueue(new Uint8Array(50000).fill(n));
                },
            });
            const res = await client.fetch("/digest", { method: "POST", body });
            const three = new ReadableStream({
                start(c) { c.enqueue(new Uint8Array(3)); c.close(); },
            });
            const again = await client.fetch("/digest", { method: "POST", body: three });
            const json = await res.json();
            const againJson = await again.json(); // the exchange is complete once read
            const { streamedUpload, requestFrames } = client.lastExchange.ehbp;
            return { json, again: againJson, ex: streamedUpload, frames: requestFrames };
        }""",
        stream_uploads,
    )
    expected = b"".join(bytes([n]) * 50000 for n in range(1, 21))
    assert result["json"]["size"] == len(expected)
    assert result["json"]["sha256"] == hashlib.sha256(expected).hexdigest()
    assert result["again"]["size"] == 3 and result["ex"] is False and result["frames"] == [19]


TAMPER_SCRIPT = """async () => {
    const client = await connect();
    const res = await client.fetch("/download/262144", { method: "POST", body: "go" });
    const reader = res.body.getReader();
    const got = [];
    try {
        for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            got.push(value.length);
        }
        return { status: res.status, got, error: null };
    } catch (err) {
        const recorded = client.lastExchange.error;
        return { status: res.status, got, error: err.code, name: err.name, recorded };
    }
}"""


def _flip_in_frame(body: bytes, frame_index: int) -> bytes:
    at = 0
    for _ in range(frame_index):
        at += 4 + int.from_bytes(body[at : at + 4], "big")
    tampered = bytearray(body)
    tampered[at + 4 + 100] ^= 0x01
    return bytes(tampered)


@pytest.mark.parametrize("frame_index", [0, 2], ids=["first-frame", "third-frame"])
def test_a_tampered_response_frame_is_refused(page: Page, frame_index: int) -> None:
    def tamper(route: Route) -> None:
        response = route.fetch()
        assert ehbp.RESPONSE_NONCE_HEADER.lower() in response.headers
        route.fulfill(response=response, body=_flip_in_frame(response.body(), frame_index))

    page.route("**/download/*", tamper)
    result = page.evaluate(TAMPER_SCRIPT)
    assert result["status"] == 200
    assert result["error"] == "invalid_response" and result["name"] == "HybridError"
    assert result["got"] == [ehbp.FRAME_SIZE] * frame_index  # nothing of the bad frame or after
    assert result["recorded"]["code"] == "invalid_response"


def test_an_unsealed_2xx_answer_to_a_sealed_request_is_refused(page: Page) -> None:
    page.route(
        "**/api/echo",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body='{"received":"swapped"}'
        ),
    )
    result = page.evaluate(
        """async () => {
            const client = await connect();
            try {
                await client.fetch("/api/echo", { method: "POST", body: { a: 1 } });
                return null;
            } catch (err) {
                return { code: err.code, status: err.status };
            }
        }"""
    )
    assert result == {"code": "invalid_response", "status": 200}


def test_key_config_422_refetches_and_resends_once(page: Page) -> None:
    served: list[str] = []

    def keys(route: Route) -> None:
        served.append("stale" if not served else "real")
        if served[-1] == "stale":
            route.fulfill(
                status=200, headers={"Content-Type": ehbp.KEYS_MEDIA_TYPE}, body=stale_key_config()
            )
        else:
            route.continue_()

    page.route("**" + ehbp.KEYS_PATH, keys)
    result = page.evaluate(
        """async () => {
            const seen = [];
            const onExchange = (ex) => seen.push([ex.status, ex.error && ex.error.code]);
            const client = await connect({ onExchange });
            const staleKid = client.kid;
            const res = await client.fetch("/api/echo", { method: "POST", body: { n: 1 } });
            return { json: await res.json(), seen, staleKid, kid: client.kid };
        }"""
    )
    assert served == ["stale", "real"]
    assert result["json"] == {"received": {"n": 1}}
    assert result["seen"] == [[422, "key_config_mismatch"], [200, None]]
    assert result["staleKid"] != result["kid"]


def test_key_config_422_with_a_stream_body_is_not_resent(page: Page) -> None:
    served: list[str] = []

    def keys(route: Route) -> None:
        served.append("stale" if not served else "real")
        if served[-1] == "stale":
            route.fulfill(
                status=200, headers={"Content-Type": ehbp.KEYS_MEDIA_TYPE}, body=stale_key_config()
            )
        else:
            route.continue_()

    page.route("**" + ehbp.KEYS_PATH, keys)
    result = page.evaluate(
        """async () => {
            const client = await connect();
            const body = new ReadableStream({
                start(c) { c.enqueue(new TextEncoder().encode('{"n":2}')); c.close(); },
            });
            let error = null;
            try {
                await client.fetch("/api/echo", { method: "POST", body });
            } catch (err) {
                error = [err.code, err.status];
            }
            const next = await client.fetch("/api/echo", { method: "POST", body: { n: 3 } });
            return { error, next: await next.json() };
        }"""
    )
    assert result == {"error": ["key_config_mismatch", 422], "next": {"received": {"n": 3}}}
    assert served == ["stale", "real"]


def test_streamed_uploads_from_node_against_the_server(h_live: LiveServer) -> None:
    run_node_tests("ehbp.live.test.mjs", FH_BASE_URL=h_live.url)


SECRETS = ["Volumetric infusion pump", "Northwind Clinical", "NW-ECG-12L", "30324.18"]


def test_demo_page_format_h_round_trip_then_tamper(browser: Browser, h_live: LiveServer) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    try:
        page.goto(h_live.url + "/")
        page.wait_for_selector("body[data-ready='true']")
        page.check("#format-ehbp")
        page.click("#connect")
        page.wait_for_selector("#connection-state[data-state='connected']")
        assert page.inner_text("#conn-format") == "H · HPKE frames (EHBP)"
        assert ehbp.KEYS_PATH in page.inner_text("#handshake")

        def send(tamper: bool) -> str:
            page.set_checked("#tamper", tamper)
            seq = int(page.get_attribute("#result", "data-seq") or "0")
            page.click("#send")
            page.wait_for_function(
                "n => Number(document.querySelector('#result').dataset.seq) > n", arg=seq
            )
            return page.get_attribute("#result", "data-state") or ""

        assert send(False) == "ok"
        assert page.get_attribute("#status", "data-value") == "200"
        assert page.get_attribute("#sealed", "data-value") == "sealed"
        assert page.get_attribute("#signature", "data-value") == "not-needed"
        assert "✓" in page.inner_text("#echo-check")
        wire_request = page.inner_text("#wire-request")
        wire_response = page.inner_text("#wire-response")
        assert "Ehbp-Encapsulated-Key" in wire_request and "ehbp-encapsulated-key" in wire_request
        assert "Ehbp-Response-Nonce" in wire_response and "ehbp-response-nonce" in wire_response
        lengths = page.eval_on_selector_all(
            "#wire-request .frame", "items => items.map(i => Number(i.dataset.length))"
        )
        order = json.dumps(
            json.loads(page.input_value("#order")), separators=(",", ":"), ensure_ascii=False
        )
        assert lengths == [len(order.encode()) + 16]
        assert f"length 0x{lengths[0]:08x}" in wire_request
        assert page.eval_on_selector_all("#wire-response .frame", "items => items.length") >= 1
        for secret in SECRETS:
            assert secret not in wire_request and secret not in wire_response
        assert "frame" in page.inner_text("#sizes")
        OUTPUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUTPUT / "demo-ehbp.png"), full_page=True)

        # A flipped byte of the first frame: the server cannot tell it from a stale key (422),
        # the module refetches the keys and resends once (tampered again): refused again.
        assert send(True) == "refused"
        assert page.get_attribute("#status", "data-value") == "422"
        assert "key_config_mismatch" in page.inner_text("#error")
        assert "Tampered in transit" in page.inner_text("#wire-request")
        log = page.inner_text("#log tbody")
        assert log.count("key_config_mismatch") == 2
        page.screenshot(path=str(OUTPUT / "demo-ehbp-tampered.png"), full_page=True)

        assert send(False) == "ok"  # the next request is not tampered with
    finally:
        context.close()
    unexpected = [text for text in console if "status of 422" not in text]
    assert unexpected == []
