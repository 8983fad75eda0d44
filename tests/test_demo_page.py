"""The demo page at ``/`` in real headless Chromium (Playwright for Python).

For every wire format (J, S, E with JSEncrypt PKCS#1 v1.5, E with Web Crypto OAEP; E with a
sealed and with a clear answer) the page connects, sends the purchase order, shows the decrypted
echo, keeps the order out of the wire panel, reports the right signature status, and shows the
server's refusal of a tampered request. After each send the result scrolls into view; a body
that is not JSON clears the previous request's outcome; the log shows the checked signature of
the session's DELETE; the panels keep the members in the order they were sent. Screenshots go to
``test-output/`` (git-ignored).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from .conftest import LiveServer

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "test-output"
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 15_000

# Strings of the prefilled order that must never appear on the wire when it is encrypted.
SECRETS = ["Volumetric infusion pump", "Northwind Clinical", "NW-ECG-12L", "30324.18"]
NOT_NEEDED = "not needed (sealed: AEAD-authenticated)"


@dataclass
class Demo:
    """The demo page in one browser context, with its console errors and requested URLs."""

    page: Page
    origin: str
    console_errors: list[ConsoleMessage] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)

    def open(self) -> None:
        self.page.goto(self.origin + "/")
        self.page.wait_for_selector("body[data-ready='true']")

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector)

    def value(self, selector: str) -> str:
        return self.page.get_attribute(selector, "data-value") or ""

    def choose(self, fmt: str, wrap: str | None = None, seal: bool | None = None) -> None:
        self.page.check(f"#format-{fmt}")
        if wrap is not None:
            self.page.check(f"#wrap-{wrap}")
        if seal is not None:
            self.page.set_checked("#seal-response", seal)

    def connect(self) -> None:
        self.page.click("#connect")
        self.page.wait_for_selector("#connection-state[data-state='connected']")

    def send(self, *, tamper: bool = False) -> str:
        """Click "Send encrypted" and wait for the page to show the outcome; returns the state."""
        self.page.set_checked("#tamper", tamper)
        seq = int(self.page.get_attribute("#result", "data-seq") or "0")
        self.page.click("#send")
        self.page.wait_for_function(
            "n => Number(document.querySelector('#result').dataset.seq) > n", arg=seq
        )
        return self.page.get_attribute("#result", "data-state") or ""

    def order(self) -> Any:
        return json.loads(self.page.input_value("#order"))

    def shot(self, name: str) -> None:
        OUTPUT.mkdir(exist_ok=True)
        self.page.screenshot(path=str(OUTPUT / name), full_page=True)

    def unexpected_console_errors(self, refusals: int) -> list[str]:
        """Console errors other than Chromium's one line per expected 400 of /api/echo."""
        left = []
        expected = 0
        for message in self.console_errors:
            url = message.location.get("url", "")
            if (
                "status of 400" in message.text
                and url.endswith("/api/echo")
                and expected < refusals
            ):
                expected += 1
                continue
            left.append(f"{message.text} ({url})")
        return left


@pytest.fixture
def demo(browser: Browser, live_server: LiveServer) -> Iterator[Demo]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    state = Demo(page, live_server.url)
    page.on("console", lambda m: state.console_errors.append(m) if m.type == "error" else None)
    page.on("pageerror", lambda exc: state.page_errors.append(str(exc)))
    page.on("request", lambda request: state.requested.append(request.url))
    try:
        state.open()
        yield state
    finally:
        context.close()


@dataclass(frozen=True)
class Scenario:
    name: str
    fmt: str
    wrap: str | None = None
    seal: bool | None = None
    signature: str = "not-needed"  # of the successful answer

    @property
    def sealed(self) -> bool:
        return self.seal is not False


SCENARIOS = [
    Scenario("jwe", "jwe"),
    # S's seal names no request, so the server also signs S's sealed answers (PROTOCOL.md).
    Scenario("session", "session", signature="valid"),
    # Format E: the page's default seals the answer (X-Encrypt-Response: true) ...
    Scenario("envelope-jsencrypt", "envelope", wrap="jsencrypt"),
    Scenario("envelope-oaep", "envelope", wrap="oaep"),
    # ... and without it the answer travels in clear, signed.
    Scenario("envelope-jsencrypt-clear", "envelope", "jsencrypt", seal=False, signature="valid"),
    Scenario("envelope-oaep-clear", "envelope", "oaep", seal=False, signature="valid"),
]


def assert_no_secrets(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} is readable in {where}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_round_trip_then_tamper(demo: Demo, scenario: Scenario) -> None:
    page = demo.page
    demo.choose(scenario.fmt, scenario.wrap, scenario.seal)
    demo.connect()
    if scenario.fmt == "session":
        assert re.fullmatch(r"[0-9a-f-]{36}", demo.text("#session-id"))
        assert "201" in demo.text("#handshake") and "valid" in demo.text("#handshake")
    else:
        assert demo.text("#kid") not in ("", "—")

    order = demo.order()
    if scenario.fmt == "session":  # the order is editable: what is sent is what is typed
        order["lines"][0]["qty"] = 3
        order["notes"] = "Deliver to Gebäude C — loading dock 2 ✓"
        page.fill("#order", json.dumps(order, indent=2, ensure_ascii=False))
    assert order["lines"] and all({"sku", "qty", "unitPrice"} <= set(li) for li in order["lines"])

    # -- A good request -------------------------------------------------------------------------
    assert demo.send() == "ok", demo.text("#error")
    assert demo.value("#status") == "200" and "200 OK" in demo.text("#status")
    assert json.loads(demo.text("#app-answer")) == {"received": order}
    assert json.loads(demo.text("#app-received")) == order
    assert "echoed back exactly this body" in demo.text("#echo-check")
    assert demo.value("#signature") == scenario.signature
    expected_text = NOT_NEEDED if scenario.signature == "not-needed" else "valid"
    assert demo.text("#signature") == expected_text
    assert demo.value("#sealed") == ("sealed" if scenario.sealed else "clear")

    wire_request = demo.text("#wire-request")
    wire_response = demo.text("#wire-response")
    assert_no_secrets(wire_request, "the wire request")
    if scenario.sealed:
        assert_no_secrets(wire_response, "the sealed wire response")
    else:
        assert "Volumetric infusion pump" in wire_response  # E without X-Encrypt-Response
        assert "Not sealed" in wire_response
        assert "x-response-signature" in wire_response
    if scenario.fmt == "jwe":
        assert page.locator("#wire-request .jwe > li").count() == 5
        assert page.locator("#wire-response .jwe > li").count() == 5
        for member in ('"alg": "RSA-OAEP-256"', '"enc": "A256GCM"', '"htm": "POST"'):
            assert member in wire_request
        assert '"htu": "/api/echo"' in wire_request
        assert '"alg": "dir"' in wire_response and '"status": 200' in wire_response
        demo.shot("demo-page.png")
    elif scenario.fmt == "session":
        assert '"encryptedAesKey"' in wire_request and "authorization" in wire_request
        assert '"encryptedData"' in wire_response
    else:
        alg = "RSA+AES-GCM" if scenario.wrap == "jsencrypt" else "RSA-OAEP-256+AES-GCM"
        assert f'"alg": "{alg}"' in wire_request and '"ek"' in wire_request
        if scenario.sealed:
            assert '"alg": "AES-GCM"' in wire_response
            assert "x-encrypt-response" in wire_request
        else:
            assert "x-encrypt-response" not in wire_request

    # -- The same request, one ciphertext byte flipped in transit -------------------------------
    assert demo.send(tamper=True) == "refused", demo.text("#error")
    assert demo.value("#status") == "400" and "400 Bad Request" in demo.text("#status")
    assert demo.value("#signature") == "valid"  # the refusal is signed
    assert demo.text("#signature") == "valid"
    assert demo.value("#sealed") == "refusal"
    error = demo.text("#error")
    assert "invalid_payload" in error and "400" in error and "signed" in error
    assert "flipped byte" in error
    exact = page.inner_text("#error pre")
    body = json.loads(exact)
    assert body["error"] == "invalid_payload" and set(body) == {"error", "message"}
    assert exact in demo.text("#wire-response")  # the exact bytes as received
    assert page.locator("#wire-request mark.flip").count() == 1
    assert_no_secrets(demo.text("#wire-request"), "the tampered wire request")
    assert "Nothing" in demo.text("#app-received")
    assert not page.is_checked("#tamper")  # one request only
    if scenario.fmt == "jwe":
        demo.shot("demo-page-tamper.png")
    else:
        demo.shot(f"demo-page-{scenario.name}-tamper.png")

    # -- The next request goes through again ----------------------------------------------------
    assert demo.send() == "ok", demo.text("#error")
    assert json.loads(demo.text("#app-answer")) == {"received": order}
    demo.shot(f"demo-page-{scenario.name}.png")

    log = demo.text("#log tbody")
    assert log.count("invalid_payload") == 1
    assert not demo.page_errors, demo.page_errors
    assert not demo.unexpected_console_errors(refusals=1)


def test_page_is_self_contained_and_labelled(demo: Demo) -> None:
    page = demo.page
    assert page.title().startswith("flask-hybrid")
    # No CDN, no web font: everything comes from this server (or is inline).
    assert demo.requested
    assert all(url.startswith((demo.origin, "data:")) for url in demo.requested), demo.requested
    for wanted in (
        "/hybrid/static/hybrid.js",
        "/static/demo.js",
        "/static/vendor/jsencrypt.min.js",
    ):
        assert any(url.startswith(demo.origin + wanted) for url in demo.requested), wanted
    for selector in (
        "#format",
        "#connect",
        "#send",
        "#tamper",
        "#order",
        "#wire-request",
        "#wire-response",
        "#app-received",
        "#app-answer",
        "#status",
        "#signature",
        "#error",
    ):
        assert page.locator(selector).count() == 1, selector
    # Every form control has a label.
    for control in page.locator("input, textarea").all():
        control_id = control.get_attribute("id")
        assert control_id and page.locator(f"label[for='{control_id}']").count() == 1, control_id
    assert page.is_disabled("#send")  # not before connecting
    assert not page.is_visible("#envelope-options")
    page.check("#format-envelope")
    assert page.is_visible("#envelope-options") and page.is_checked("#wrap-jsencrypt")
    assert page.is_checked("#seal-response")  # format E seals the answer by default
    assert not demo.page_errors and not demo.console_errors


def test_switching_format_ends_the_session_and_bad_json_is_caught(demo: Demo) -> None:
    page = demo.page
    demo.choose("session")
    demo.connect()
    page.check("#format-jwe")  # a new format: the S session is closed (DELETE /hybrid/session)
    page.wait_for_selector("#connection-state[data-state='disconnected']")
    page.wait_for_function("document.querySelector('#log tbody').innerText.includes('close')")
    assert "session ended" in demo.text("#log tbody")
    assert page.is_disabled("#send")

    demo.connect()
    page.fill("#order", '{"poNumber": "PO-1", ')
    assert demo.send() == "invalid"
    assert "not valid JSON" in demo.text("#error")
    page.click("#reset-order")
    assert demo.send() == "ok"
    assert json.loads(demo.text("#app-answer")) == {"received": demo.order()}
    assert not demo.page_errors and not demo.unexpected_console_errors(refusals=0)


# -- What the page shows after each kind of send (issue 6, "The demo page") ---------------------

WAIT_FOR_SCROLL_END = """() => new Promise((resolve) => {
  let last = -1;
  let still = 0;
  const tick = () => {
    if (window.scrollY === last) still += 1;
    else still = 0;
    last = window.scrollY;
    if (still >= 10) resolve(window.scrollY);
    else requestAnimationFrame(tick);
  };
  tick();
})"""


def box_in_viewport(page: Page, selector: str) -> tuple[float, float]:
    """The top and bottom of `selector` relative to the viewport, once scrolling has stopped."""
    page.evaluate(WAIT_FOR_SCROLL_END)
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["y"], box["y"] + box["height"]


def test_send_scrolls_the_result_into_view(demo: Demo) -> None:
    page = demo.page
    demo.connect()
    page.evaluate("window.scrollTo(0, 0)")
    _, bottom = box_in_viewport(page, "#result")
    assert bottom > VIEWPORT["height"], "the result must start out of view, or this tests nothing"

    assert demo.send() == "ok", demo.text("#error")
    top, bottom = box_in_viewport(page, "#result")
    # All of it in view, at the top of the viewport: the panels below it start to show.
    assert 0 <= top < 40 and bottom <= VIEWPORT["height"], (top, bottom)
    assert page.evaluate("window.scrollY") > 0
    demo.shot("demo-page-scrolled.png")
    page.screenshot(path=str(OUTPUT / "demo-page-scrolled-viewport.png"))

    # A refusal and a local error are results too: back to the form, send, and it scrolls again.
    page.evaluate("window.scrollTo(0, 0)")
    assert demo.send(tamper=True) == "refused"
    top, _ = box_in_viewport(page, "#result")
    assert 0 <= top < 40, top
    page.evaluate("window.scrollTo(0, 0)")
    page.fill("#order", "{")
    assert demo.send() == "invalid"
    top, bottom = box_in_viewport(page, "#result")  # the page is short now: wherever it can
    assert top >= 0 and bottom <= VIEWPORT["height"], (top, bottom)
    assert "not valid JSON" in demo.text("#error")
    assert not demo.page_errors and not demo.unexpected_console_errors(refusals=1)


def test_invalid_json_clears_the_previous_request(demo: Demo) -> None:
    page = demo.page
    demo.connect()
    assert demo.send() == "ok", demo.text("#error")
    assert demo.value("#status") == "200" and demo.value("#sealed") == "sealed"
    assert demo.value("#signature") == "not-needed"
    assert demo.text("#timing") != "—"

    page.fill("#order", '{"poNumber": "PO-1", ')
    assert demo.send() == "invalid"
    assert "not valid JSON" in demo.text("#error") and "Nothing was sent" in demo.text("#error")
    for badge in ("#status", "#signature", "#sealed"):
        assert demo.value(badge) == "", badge
        assert demo.text(badge) == "—", badge
    assert demo.text("#timing") == "—"
    assert demo.text("#sizes") == "" and demo.text("#signature-detail") == ""
    assert "Nothing was sent" in demo.text("#wire-request")
    assert demo.text("#app-answer") == demo.text("#app-received") == "Nothing yet."
    assert not page.is_visible("#echo-check")
    demo.shot("demo-page-invalid-json.png")
    # Only the one good request reached the server.
    assert demo.text("#log tbody").count("POST /api/echo") == 1
    assert not demo.page_errors and not demo.unexpected_console_errors(refusals=0)


def log_row(page: Page, kind: str) -> list[str]:
    """The cells of the newest exchange-log row of `kind` (handshake, request, close)."""
    row = page.locator("#log tbody tr").filter(
        has=page.locator("td:nth-child(3)", has_text=re.compile(f"^{kind}$"))
    )
    return row.first.locator("td").all_inner_texts()


def test_log_shows_the_signature_of_the_session_close(demo: Demo) -> None:
    page = demo.page
    closes: list[dict[str, str]] = []
    page.on(
        "response",
        lambda response: (
            closes.append(response.headers) if response.request.method == "DELETE" else None
        ),
    )
    demo.choose("session")
    demo.connect()
    page.check("#format-jwe")  # ends the session: DELETE /hybrid/session
    page.wait_for_function("document.querySelector('#log tbody').innerText.includes('close')")

    assert len(closes) == 1
    assert "x-response-signature" in closes[0] or "signature" in closes[0]  # the server signs it
    cells = log_row(page, "close")
    assert cells[4] == "DELETE /hybrid/session" and cells[5] == "204", cells
    assert cells[6] == "empty" and cells[8] == "session ended", cells
    assert cells[7] == "valid", cells  # checked, as the handshake's
    assert log_row(page, "handshake")[7] == "valid"
    demo.shot("demo-page-close-signature.png")
    assert not demo.page_errors and not demo.unexpected_console_errors(refusals=0)


# Members out of alphabetical order, integer-like names (a JS object would put "2" and "10"
# first), numbers a JS number would rewrite (4890.0 -> 4890, 2^64 + 1 rounded), text not in ASCII.
ORDER_AS_TYPED = """{
  "zulu": "first",
  "10": "ten",
  "2": "two",
  "alpha": {"yankee": 1, "7": [3, 1, 2], "bravo": {"z": null, "a": true}},
  "unitPrice": 4890.0,
  "serial": 18446744073709551617,
  "note": "Gebäude C — dock 2 ✓",
  "empty": {},
  "none": []
}"""


@pytest.mark.parametrize("fmt", ["jwe", "session", "envelope"])
def test_answer_shows_members_in_the_order_the_view_sent(demo: Demo, fmt: str) -> None:
    page = demo.page
    demo.choose(fmt)
    demo.connect()
    page.fill("#order", ORDER_AS_TYPED)
    assert demo.send() == "ok", demo.text("#error")

    # The view (Flask, sort_keys off in the demo) answers {"received": <what it got>}, in order.
    as_sent = json.dumps(json.loads(ORDER_AS_TYPED), indent=2, ensure_ascii=False)
    answered = json.dumps({"received": json.loads(ORDER_AS_TYPED)}, indent=2, ensure_ascii=False)
    assert demo.text("#app-received") == as_sent
    assert demo.text("#app-answer") == answered
    assert "echoed back exactly this body" in demo.text("#echo-check")
    assert list(json.loads(demo.text("#app-answer"))["received"]) == [
        "zulu",
        "10",
        "2",
        "alpha",
        "unitPrice",
        "serial",
        "note",
        "empty",
        "none",
    ]
    demo.shot(f"demo-page-member-order-{fmt}.png")
    assert not demo.page_errors and not demo.unexpected_console_errors(refusals=0)
