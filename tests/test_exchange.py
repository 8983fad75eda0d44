"""The framework-free exchange, driven without WSGI: a transport's view of flask-hybrid.

Bodies are fed in small chunks, as a streaming transport would receive them; the answers are
opened with the core's client-side functions.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
from collections.abc import Callable

import flask.json.provider
import pytest
from flask import Flask, request

from flask_hybrid.core import aead, encoding, formats, rsa
from flask_hybrid.core.encoding import NOT_PARSED
from flask_hybrid.errors import InvalidPayload, PayloadTooLarge, ReplayedRequest
from flask_hybrid.exchange import (
    Exchange,
    Exchanges,
    RequestHead,
    detect,
    expose_headers,
    wire_limit,
)
from flask_hybrid.middleware import PlaintextInput

from .builders import e_envelope, j_header, j_token, state_of


def identity_public_key(flask_app: Flask) -> rsa.PublicKey:
    return state_of(flask_app).keyring.current.private_key.public_key()


ORDER = json.dumps({"order": {"id": 7, "lines": [{"sku": "A-1", "qty": 2}]}}).encode()


def _head(body: bytes, **headers: str) -> RequestHead:
    content_type = headers.pop("content_type", "application/jose")
    return RequestHead(
        method="POST",
        target="/api/echo",
        path="/api/echo",
        remote_addr="127.0.0.1",
        content_type=content_type,
        content_length=str(len(body)),
        streamed_body=False,
        headers=headers,
    )


def _feed(exchange: Exchange, body: bytes, chunk: int = 7) -> bytearray:
    buffer = exchange.body_buffer()
    for start in range(0, len(body), chunk):
        buffer.feed(body[start : start + chunk])
    assert buffer.done
    return buffer.take()


def test_a_j_request_and_its_sealed_answer_without_wsgi(app: Flask) -> None:
    state = state_of(app)
    exchanges = Exchanges(state)
    header = j_header(state.keyring.current.kid, "POST", "/api/echo")
    token, cek = j_token(identity_public_key(app), header, ORDER)
    head = _head(token.encode())
    exchange = exchanges.start(head)
    assert exchange is not None and exchange.kind == "J"
    opened = exchange.open(_feed(exchange, token.encode()))
    assert opened is not None
    assert bytes(opened.plaintext) == ORDER
    assert opened.json == json.loads(ORDER)  # built once, by the check, for the app to reuse
    assert opened.encrypted.cek == cek and opened.encrypted.request_jti == header["jti"]

    headers, parts = exchanges.finish(
        answered=head.answered(),
        path=head.path,
        encrypted=opened.encrypted,
        refusal=None,
        status_code=201,
        headers=[("Content-Type", "application/json"), ("ETag", '"v1"')],
        body=b'{"ok":true}',
    )
    body = b"".join(parts)  # pieces written out in order, never joined by the server
    names = [name.lower() for name, _ in headers]
    assert "etag" not in names  # it would describe the plaintext
    assert ("Content-Type", "application/jose") in headers
    assert ("Content-Length", str(len(body))) in headers
    sealed_header, plaintext = formats.open_response(body.decode(), cek, request_jti=header["jti"])
    assert plaintext == b'{"ok":true}' and sealed_header["status"] == 201

    replayed = Exchange(exchanges, _head(token.encode()), "J")
    with pytest.raises(ReplayedRequest):
        replayed.open(_feed(replayed, token.encode()))


def test_plain_requests_are_not_ours() -> None:
    assert detect("application/json", None, None) is None
    assert detect("multipart/form-data; boundary=x", "true", None) is None
    assert detect("application/jose; charset=x", None, None) == "J"
    assert detect("", None, "a.b.c.d.e") == "J"
    assert detect("application/json", " TRUE ", None) == "SE"


def test_a_body_over_the_limit_is_refused_as_it_arrives(make_app: Callable[..., Flask]) -> None:
    state = state_of(make_app(HYBRID_MAX_BODY=1024))
    head = _head(b"")
    head.content_length, head.streamed_body = None, True
    buffer = Exchange(Exchanges(state), head, "J").body_buffer()
    limit = wire_limit(1024)
    buffer.feed(b"x" * limit)
    with pytest.raises(PayloadTooLarge):
        buffer.feed(b"x")


def test_a_declared_length_over_the_limit_is_refused_before_reading(
    make_app: Callable[..., Flask],
) -> None:
    state = state_of(make_app(HYBRID_MAX_BODY=1024))
    head = _head(b"")
    head.content_length = str(wire_limit(1024) + 1)
    with pytest.raises(PayloadTooLarge):
        Exchange(Exchanges(state), head, "J").body_buffer()
    head.content_length = "١٢"  # Arabic-Indic digits: str.isdigit() says yes, HTTP says no
    with pytest.raises(InvalidPayload):
        Exchange(Exchanges(state), head, "J").body_buffer()


def test_an_e_request_in_clear_is_bound_by_its_cek(app: Flask) -> None:
    state = state_of(app)
    exchanges = Exchanges(state)
    envelope, _ = e_envelope(identity_public_key(app), ORDER)
    body = json.dumps(envelope).encode()
    head = _head(body, content_type="application/json", **{"x-encryption-enabled": "true"})
    exchange = exchanges.start(head)
    assert exchange is not None
    opened = exchange.open(_feed(exchange, body, chunk=100))
    assert opened is not None and opened.encrypted.format == "E"
    assert not exchanges.must_buffer("/x", None, None)  # a plain answer streams
    assert exchanges.must_buffer("/x", opened.encrypted, None)
    headers, parts = exchanges.finish(
        answered=head.answered(),
        path=head.path,
        encrypted=opened.encrypted,
        refusal=None,
        status_code=200,
        headers=[("Content-Type", "application/json")],
        body=b"{}",
    )
    assert parts == [b"{}"]  # E answers in clear, bound by an HMAC under the request's CEK
    signature_input = dict(headers)["Signature-Input"]
    assert 'keyid="cek"' in signature_input and 'alg="hmac-sha256"' in signature_input


def test_cors_answers_expose_our_headers_once() -> None:
    headers = [
        ("Access-Control-Allow-Origin", "https://a.example"),
        ("Access-Control-Expose-Headers", "X-Mine, signature"),
        ("Signature", "x"),
        ("Content-Digest", "y"),
    ]
    exposed = dict(expose_headers(headers))["Access-Control-Expose-Headers"]
    assert exposed == "X-Mine, signature, Content-Digest"
    assert expose_headers([("Signature", "x")]) == [("Signature", "x")]


# --- base64: the canonical check without re-encoding --------------------------------------------
def _canonical_by_reencoding(text: bytes, urlsafe: bool) -> bool:
    """The old check: decode, encode again, compare."""
    try:
        if urlsafe:
            padded = text.translate(bytes.maketrans(b"-_", b"+/")) + b"=" * (-len(text) % 4)
            if len(text) % 4 == 1 or b"=" in text or b"+" in text or b"/" in text:
                return False
            return base64.b64encode(binascii.a2b_base64(padded, strict_mode=True)) == padded
        return base64.b64encode(binascii.a2b_base64(text, strict_mode=True)) == text
    except binascii.Error:
        return False


@pytest.mark.parametrize("urlsafe", [False, True])
def test_canonical_base64_agrees_with_reencoding(urlsafe: bool) -> None:
    alphabet = b"AQgwBR+/-_=. "
    for length in range(0, 5):
        for letters in itertools.product(alphabet, repeat=length):
            text = bytes(letters)
            decode = encoding.b64url_decode if urlsafe else encoding.b64decode
            try:
                decode(text)
                accepted = True
            except InvalidPayload:
                accepted = False
            assert accepted == _canonical_by_reencoding(text, urlsafe), text


# --- JSON parsed once ---------------------------------------------------------------------------
def test_a_json_body_is_parsed_once(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []

    @app.post("/api/parsed")
    def parsed() -> dict:
        seen.append(request.get_json())
        return {"ok": True}

    calls: list[int] = []
    real_loads = json.loads

    def counting_loads(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real_loads(*args, **kwargs)  # type: ignore[arg-type]

    state = state_of(app)
    token, _ = j_token(
        identity_public_key(app), j_header(state.keyring.current.kid, "POST", "/api/parsed"), ORDER
    )
    monkeypatch.setattr(json, "loads", counting_loads)  # what Flask's provider parses with
    response = app.test_client().post(
        "/api/parsed", data=token, headers={"Content-Type": "application/jose"}
    )
    monkeypatch.undo()
    assert response.status_code == 200
    assert seen == [json.loads(ORDER)]
    assert calls == []  # the view got the value the middleware's check built


def test_an_app_with_its_own_json_provider_parses_itself(app: Flask) -> None:
    import decimal

    class DecimalProvider(flask.json.provider.DefaultJSONProvider):
        def loads(self, s: str | bytes, **kwargs: object) -> object:
            return json.loads(s, parse_float=decimal.Decimal)

    app.json = DecimalProvider(app)
    seen: list[object] = []

    @app.post("/api/price")
    def price() -> dict:
        seen.append(request.get_json()["price"])
        return {"ok": True}

    state = state_of(app)
    token, _ = j_token(
        identity_public_key(app),
        j_header(state.keyring.current.kid, "POST", "/api/price"),
        b'{"price": 9.90}',
    )
    response = app.test_client().post(
        "/api/price", data=token, headers={"Content-Type": "application/jose"}
    )
    assert response.status_code == 200
    assert seen == [decimal.Decimal("9.90")]


def test_a_large_document_is_parsed_only_when_its_tree_stays_small() -> None:
    many_values = json.dumps({"items": [{"n": n} for n in range(2000)]}).encode()
    assert formats.require_json(bytearray(many_values)) is NOT_PARSED
    assert formats.require_json(bytearray(ORDER)) == json.loads(ORDER)
    upload = json.dumps({"name": "scan.pdf", "data": "QUJD" * 100_000}).encode()
    assert formats.require_json(bytearray(upload)) == json.loads(upload)  # parsed once
    astral = json.dumps({"data": "x" * 400_000 + "\U0001f600"}, ensure_ascii=False).encode()
    assert formats.require_json(bytearray(astral)) is NOT_PARSED  # its str: 4 bytes a letter
    deep = b"[" * 600 + b'"' + b"x" * 400_000 + b'"' + b"]" * 600  # json.loads would take it
    with pytest.raises(InvalidPayload):
        formats.require_json(bytearray(deep))


# --- the app's wsgi.input -----------------------------------------------------------------------
def test_plaintext_input_reads_like_a_file() -> None:
    stream = PlaintextInput(bytearray(b"line one\nline two\nend"))
    assert stream.readline() == b"line one\n"
    assert stream.read(4) == b"line"
    target = bytearray(5)
    assert stream.readinto(target) == 5 and bytes(target) == b" two\n"
    assert stream.readline(2) == b"en"
    assert stream.read() == b"d"
    assert stream.read() == b"" and stream.readline() == b""


def test_iv_pages_never_repeat_across_threads_and_forks() -> None:
    import os
    import threading

    seen: list[bytes] = []
    lock = threading.Lock()

    def draw() -> None:
        ivs = [aead.new_iv() for _ in range(2000)]
        with lock:
            seen.extend(ivs)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    read_end, write_end = os.pipe()
    aead.new_iv()  # the parent's page is in use
    pid = os.fork()
    if pid == 0:  # the child's first IV must not be the one the parent draws next
        os.write(write_end, aead.new_iv())
        os._exit(0)
    parent_next = aead.new_iv()
    os.waitpid(pid, 0)
    child_first = os.read(read_end, 12)
    seen.extend([parent_next, child_first, aead.new_iv()])
    assert len(set(seen)) == len(seen) and all(len(iv) == 12 for iv in seen)


@pytest.mark.parametrize("intruder", [b".", b"!", b"+", b"=", b" "])
def test_a_large_ciphertext_is_checked_as_it_is_decoded(intruder: bytes) -> None:
    from flask_hybrid.core import jwe

    cek = aead.new_cek()
    token = bytearray(jwe.encrypt({"alg": "dir", "enc": "A256GCM"}, b"x" * 300_000, cek).encode())
    middle = len(token) // 2
    token[middle : middle + 1] = intruder  # not base64url, deep inside the ciphertext
    with pytest.raises(InvalidPayload):
        parsed = jwe.parse_compact(memoryview(token), alg=jwe.ALG_DIR)
        jwe.decrypt(parsed, cek)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 49151, 49152, 49153, 200_001])
def test_sealed_pieces_join_into_what_the_one_piece_functions_give(size: int) -> None:
    from flask_hybrid.core import jwe

    cek, iv = aead.new_cek(), aead.new_iv()
    plaintext = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    session = formats.seal_session_parts(cek, plaintext, iv=iv)
    assert formats.open_session_response(b"".join(session), cek) == plaintext
    envelope = formats.seal_envelope_response_parts(cek, plaintext, iv=iv)
    assert formats.open_envelope_response(b"".join(envelope), cek) == plaintext
    token = formats.seal_response_parts(
        cek, plaintext, request_jti="j", status=200, content_type=None, iv=iv
    )
    header = {"alg": "dir", "enc": "A256GCM", "req": "j", "status": 200}
    assert b"".join(token).decode() == jwe.encrypt(header, plaintext, cek, iv=iv)
    assert len(session) > 2 or size <= aead.SEAL_CHUNK  # a large answer stays in pieces
