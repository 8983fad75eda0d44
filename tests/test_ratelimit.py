"""Rate limits: the handshake and identity-key J requests per client address (IPv6 per /64),
without touching the app's other routes; or the handshake limit on the app's own Flask-Limiter."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from flask_hybrid import HybridEncryption
from flask_hybrid.core import aead
from flask_hybrid.core.encoding import b64encode
from flask_hybrid.errors import RateLimited, error_body
from flask_hybrid.ratelimit import RateLimits, client_key, limit_storage_from_url

from .builders import j_header, j_token, new_session, state_of
from .conftest import base_config
from .redis_server import escape_glob, free_port
from .redis_topologies import delete_under, topology_prefix

ECHO = b'{"n":1}'


def handshake(flask_app: Flask, address: str = "127.0.0.1") -> Any:
    return flask_app.test_client().post(
        "/hybrid/session",
        json={"aesKey": b64encode(aead.new_cek()), "deviceId": "limit-test"},
        environ_base={"REMOTE_ADDR": address},
    )


def assert_rate_limited(response: Any, *, window: int = 60) -> None:
    assert response.status_code == 429
    assert response.data == error_body(RateLimited)
    assert 1 <= int(response.headers["Retry-After"]) <= window


# --- the key function ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "key"),
    [
        pytest.param("192.0.2.7", "192.0.2.7", id="ipv4"),
        pytest.param("::ffff:192.0.2.7", "192.0.2.7", id="ipv4-mapped"),
        pytest.param("2001:db8:1:2::1", "2001:db8:1:2::/64", id="ipv6"),
        pytest.param("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64", id="ipv6-same-64"),
        pytest.param("2001:db8:1:3::1", "2001:db8:1:3::/64", id="ipv6-next-64"),
        pytest.param("2001:DB8:0001:0002::0001", "2001:db8:1:2::/64", id="ipv6-spelling"),
        pytest.param("fe80::1%eth0", "fe80::/64", id="ipv6-scoped"),
        pytest.param("", "-", id="empty"),
        pytest.param(None, "-", id="none"),
        pytest.param("unix-socket", "unix-socket", id="not-an-ip"),
    ],
)
def test_client_key(address: str | None, key: str) -> None:
    assert client_key(address) == key


# --- flask-hybrid's own limits ------------------------------------------------------------------
def test_handshake_limit_per_ipv4_address_and_per_ipv6_64(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app(HYBRID_HANDSHAKE_LIMIT="2 per minute")
    assert handshake(flask_app, "2001:db8:1:2::1").status_code == 201
    assert handshake(flask_app, "2001:db8:1:2::99").status_code == 201  # same /64
    assert_rate_limited(handshake(flask_app, "2001:db8:1:2:abcd::5"))
    assert handshake(flask_app, "2001:db8:1:3::1").status_code == 201  # the next /64
    assert handshake(flask_app, "192.0.2.1").status_code == 201
    assert handshake(flask_app, "::ffff:192.0.2.1").status_code == 201  # the same IPv4 client
    assert_rate_limited(handshake(flask_app, "192.0.2.1"))
    assert handshake(flask_app, "192.0.2.2").status_code == 201  # IPv4: per address


def test_app_default_limits_leave_other_routes_alone(make_app: Callable[..., Flask]) -> None:
    """The app's RATELIMIT_DEFAULT once throttled every route through the extension's limiter."""
    flask_app = make_app(RATELIMIT_DEFAULT="2 per minute")
    client = flask_app.test_client()
    statuses = [client.post("/api/echo", json={"n": n}).status_code for n in range(5)]
    assert statuses == [200] * 5
    assert [client.get("/hybrid/public-key").status_code for _ in range(5)] == [200] * 5
    assert "limiter" not in flask_app.extensions
    assert [handshake(flask_app).status_code for _ in range(3)] == [201] * 3


def test_ratelimit_enabled_false_does_not_break_the_handshake(
    make_app: Callable[..., Flask],
) -> None:
    """RATELIMIT_ENABLED = False once made every format S handshake a 500 (ReferenceError)."""
    flask_app = make_app(RATELIMIT_ENABLED=False, HYBRID_HANDSHAKE_LIMIT="2 per minute")
    assert [handshake(flask_app).status_code for _ in range(2)] == [201, 201]
    # A Flask-Limiter setting: flask-hybrid's own limit still applies.
    assert_rate_limited(handshake(flask_app))


def test_limits_can_be_turned_off_and_bad_strings_name_their_key(
    make_app: Callable[..., Flask],
) -> None:
    flask_app = make_app(HYBRID_HANDSHAKE_LIMIT=None, HYBRID_JWE_LIMIT="")
    limits = state_of(flask_app).limits
    assert limits.handshake_limit is None and limits.jwe_limit is None
    for _ in range(3):
        limits.hit_handshake("192.0.2.1")
        limits.hit_jwe("192.0.2.1")
    for key in ("HYBRID_HANDSHAKE_LIMIT", "HYBRID_JWE_LIMIT"):
        with pytest.raises(ValueError, match=key):
            make_app(**{key: "lots per minute"})
    with pytest.raises(ValueError, match="rate limit storage scheme 'memcached'"):
        limit_storage_from_url("memcached://127.0.0.1:11211")


def test_limit_storage_outage_lets_requests_through_quickly(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    flask_app = make_app(
        HYBRID_HANDSHAKE_LIMIT="1 per minute",
        HYBRID_RATELIMIT_STORAGE_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    caplog.set_level(logging.WARNING, logger="flask_hybrid")
    started = time.monotonic()
    assert [handshake(flask_app).status_code for _ in range(3)] == [201] * 3
    assert time.monotonic() - started < 3
    assert "rate limit storage is unavailable" in caplog.text


def test_limits_in_redis_are_shared_by_processes(
    make_app: Callable[..., Flask], redis_url: str, redis_prefix: str
) -> None:
    config = {
        "HYBRID_STORE_URL": redis_url,
        "HYBRID_STORE_KEY_PREFIX": redis_prefix,
        "HYBRID_HANDSHAKE_LIMIT": "2 per minute",
    }
    first, second = make_app(**config), make_app(**config)
    assert handshake(first, "198.51.100.4").status_code == 201
    assert handshake(second, "198.51.100.4").status_code == 201
    assert_rate_limited(handshake(first, "198.51.100.4"))
    assert_rate_limited(handshake(second, "198.51.100.4"))


def test_rate_limits_object_alone() -> None:
    limits = RateLimits(handshake="1 per hour", jwe="2 per hour")
    limits.hit_jwe("203.0.113.9")
    limits.hit_jwe("203.0.113.9")
    with pytest.raises(RateLimited) as caught:
        limits.hit_jwe("203.0.113.9")
    assert caught.value.reason == "jwe_limit"
    assert 3500 < caught.value.retry_after <= 3600
    limits.hit_handshake("203.0.113.9")  # each limit counts on its own


# --- HYBRID_JWE_LIMIT ---------------------------------------------------------------------------
def post_j_to_identity_key(flask_app: Flask, address: str, *, wrapped_key_ok: bool = True) -> Any:
    identity = state_of(flask_app).keyring.current
    header = j_header(identity.kid, "POST", "/api/echo")
    token, _ = j_token(identity.private_key.public_key(), header, ECHO)
    if not wrapped_key_ok:  # a well-formed ek that could only fail the RSA unwrap
        parts = token.split(".")
        parts[1] = parts[1][:10] + ("B" if parts[1][10] == "A" else "A") + parts[1][11:]
        token = ".".join(parts)
    return flask_app.test_client().post(
        "/api/echo",
        data=token,
        headers={"Content-Type": "application/jose"},
        environ_base={"REMOTE_ADDR": address},
    )


def post_j_to_session(flask_app: Flask, session: dict, address: str) -> Any:
    header = j_header(session["sessionId"], "POST", "/api/echo")
    token, _ = j_token(session["public_key"], header, ECHO)
    return flask_app.test_client().post(
        "/api/echo",
        data=token,
        headers={
            "Content-Type": "application/jose",
            "Authorization": f"Bearer {session['token']}",
            "X-Device-Id": session["device_id"],
        },
        environ_base={"REMOTE_ADDR": address},
    )


def test_jwe_limit_per_address_before_the_rsa_unwrap(make_app: Callable[..., Flask]) -> None:
    """The (N+1)th identity-key J request in a window gets 429: 3 here for the default 600."""
    flask_app = make_app(HYBRID_JWE_LIMIT="3 per minute")
    limited, other = "192.0.2.10", "2001:db8:5:6::10"
    session = new_session(flask_app, ip=limited)
    assert [post_j_to_identity_key(flask_app, limited).status_code for _ in range(3)] == [200] * 3
    assert_rate_limited(post_j_to_identity_key(flask_app, limited))
    # Counted before the unwrap: a request whose ek would fail gets 429, not 400, and costs no
    # RSA decryption.
    assert_rate_limited(post_j_to_identity_key(flask_app, limited, wrapped_key_ok=False))
    # Another address, and session-kid requests from the limited one, are not affected.
    assert post_j_to_identity_key(flask_app, other).status_code == 200
    assert [post_j_to_session(flask_app, session, limited).status_code for _ in range(5)] == [
        200
    ] * 5


def test_jwe_limit_default(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()
    assert state_of(flask_app).limits.jwe_limit == "600 per minute"
    assert flask_app.config["HYBRID_JWE_LIMIT"] == "600 per minute"


# --- the app's own Flask-Limiter -----------------------------------------------------------------
def app_with_its_own_limiter(
    vector_keys: dict[str, Any], tmp_path: Any, **config: Any
) -> tuple[Flask, Limiter]:
    flask_app = Flask("with_limiter", instance_path=str(tmp_path / "instance"))
    flask_app.config.update(base_config(vector_keys, HYBRID_HANDSHAKE_LIMIT="2 per minute"))
    flask_app.config.update(config)
    limiter = Limiter(get_remote_address, app=flask_app, storage_uri="memory://")
    HybridEncryption(flask_app, limiter=limiter)

    @flask_app.post("/api/echo")
    def echo() -> dict[str, Any]:
        return {"ok": True}

    return flask_app, limiter


def test_handshake_limit_on_the_apps_limiter(vector_keys: dict, tmp_path: Any) -> None:
    flask_app, limiter = app_with_its_own_limiter(
        vector_keys, tmp_path, RATELIMIT_HEADERS_ENABLED=True
    )
    seen: list[int] = []

    @flask_app.errorhandler(429)
    def too_many(error: Any) -> Any:
        seen.append(error.code)
        return error.get_response()

    assert handshake(flask_app, "192.0.2.20").status_code == 201
    second = handshake(flask_app, "192.0.2.20")
    assert second.status_code == 201 and second.headers["X-RateLimit-Limit"] == "2"
    assert_rate_limited(handshake(flask_app, "192.0.2.20"))
    assert seen == [429]  # the app's own error handler saw it
    assert handshake(flask_app, "192.0.2.21").status_code == 201
    # Per /64 there too: one key function for both paths.
    assert handshake(flask_app, "2001:db8:9::1").status_code == 201
    assert handshake(flask_app, "2001:db8:9::2").status_code == 201
    assert_rate_limited(handshake(flask_app, "2001:db8:9::3"))
    # The app's limiter counted them; flask-hybrid's own counter (also "2 per minute") did
    # not, or these two hits would raise.
    assert limiter.enabled and flask_app.extensions["limiter"] == {limiter}
    state_of(flask_app).limits.hit_handshake("192.0.2.20")
    state_of(flask_app).limits.hit_handshake("192.0.2.20")


def test_apps_limiter_disabled_leaves_the_handshake_working(
    vector_keys: dict, tmp_path: Any
) -> None:
    flask_app, _ = app_with_its_own_limiter(vector_keys, tmp_path, RATELIMIT_ENABLED=False)
    assert [handshake(flask_app).status_code for _ in range(4)] == [201] * 4


# --- Redis Cluster and Sentinel -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_limits_on_a_cluster_or_sentinel_are_shared_by_processes(
    make_app: Callable[..., Flask], request: pytest.FixtureRequest, kind: str
) -> None:
    """The limiter follows the store's redis+cluster:// or redis+sentinel:// URL; its counters
    are single keys under the app's prefix (on the master, for Sentinel)."""
    topology = request.getfixturevalue(f"redis_{kind}")
    prefix = topology_prefix()
    config = {
        "HYBRID_STORE_URL": topology.url,
        "HYBRID_STORE_KEY_PREFIX": prefix,
        "HYBRID_HANDSHAKE_LIMIT": "2 per minute",
    }
    first, second = make_app(**config), make_app(**config)
    assert handshake(first, "198.51.100.7").status_code == 201
    assert handshake(second, "198.51.100.7").status_code == 201
    assert_rate_limited(handshake(first, "198.51.100.7"))
    assert_rate_limited(handshake(second, "198.51.100.7"))
    assert handshake(second, "198.51.100.8").status_code == 201
    client = topology.client() if kind == "cluster" else None
    if client is None:
        client = redis.Redis(host="127.0.0.1", port=topology.master_port())
    counters = list(client.scan_iter(match=escape_glob(f"{prefix}ratelimit") + "*"))
    assert len(counters) == 2  # one key per limited address
    delete_under(client, prefix)
    client.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis+cluster://:hunter2@127.0.0.1:{port}", id="cluster"),
        pytest.param("redis+sentinel://:hunter2@127.0.0.1:{port}/mymaster", id="sentinel"),
    ],
)
def test_unreachable_topology_lets_requests_through_quickly(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture, url: str
) -> None:
    """The app starts without its cluster or Sentinels; one failed count pauses the limits
    (OUTAGE_PAUSE), so the next requests do not each wait out a timeout."""
    flask_app = make_app(
        HYBRID_HANDSHAKE_LIMIT="1 per minute",
        HYBRID_RATELIMIT_STORAGE_URL=url.format(port=free_port()),
    )
    caplog.set_level(logging.WARNING, logger="flask_hybrid")
    assert [handshake(flask_app).status_code for _ in range(3)] == [201] * 3
    # One failed count, then the pause: the next two did not try (and wait) again.
    assert caplog.text.count("rate limit storage is unavailable") == 1
    assert "hunter2" not in caplog.text


def test_topology_storage_urls_are_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError) as refused:
        limit_storage_from_url("redis+sentinel://:hunter2@127.0.0.1:26379")
    assert "hunter2" not in str(refused.value)


def test_the_in_process_storage_counts_windows_without_threads() -> None:
    import threading

    from limits import parse

    from flask_hybrid.ratelimit import ProcessStorage, RateLimits

    before = threading.active_count()
    limits = RateLimits(handshake="3 per 2 second", jwe=None)
    assert isinstance(limits.storage, ProcessStorage)
    for _ in range(3):
        limits.hit_handshake("192.0.2.7")
    with pytest.raises(RateLimited) as refused:
        limits.hit_handshake("192.0.2.7")
    assert 1 <= refused.value.retry_after <= 2
    limits.hit_handshake("192.0.2.8")  # another address, its own window
    assert threading.active_count() == before  # limits' MemoryStorage starts a timer thread
    time.sleep(2.05)
    limits.hit_handshake("192.0.2.7")  # the window ended
    storage = ProcessStorage()
    item = parse("5 per second")
    assert storage.incr(item.key_for("a"), 1) == 1 and storage.get(item.key_for("a")) == 1
    storage.clear(item.key_for("a"))
    assert storage.get(item.key_for("a")) == 0 and storage.reset() == 0


def test_a_reused_cek_costs_no_rsa_work_and_is_not_counted(
    make_app: Callable[..., Flask],
) -> None:
    """HYBRID_JWE_LIMIT guards RSA work: an ek the server has unwrapped before is not counted."""
    from flask_hybrid.core import aead, jwe, rsa
    from flask_hybrid.core.encoding import b64url_encode

    flask_app = make_app(HYBRID_JWE_LIMIT="2 per minute")
    identity = state_of(flask_app).keyring.current
    cek = aead.new_cek()
    wrapped = b64url_encode(rsa.wrap_oaep(identity.private_key.public_key(), cek))

    def reused() -> Any:
        header = j_header(identity.kid, "POST", "/api/echo")
        parts = jwe.encrypt(header, ECHO, cek, public_key=identity.private_key.public_key())
        token = ".".join([parts.split(".")[0], wrapped, *parts.split(".")[2:]])
        return flask_app.test_client().post(
            "/api/echo",
            data=token,
            headers={"Content-Type": "application/jose"},
            environ_base={"REMOTE_ADDR": "192.0.2.30"},
        )

    assert [reused().status_code for _ in range(5)] == [200] * 5  # one unwrap, one count
    assert post_j_to_identity_key(flask_app, "192.0.2.30").status_code == 200  # the second
    assert_rate_limited(post_j_to_identity_key(flask_app, "192.0.2.30"))  # a third unwrap
    assert reused().status_code == 200  # still known: no RSA work, nothing to limit
