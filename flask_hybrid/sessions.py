"""Handshake sessions over a store: session keys, JWTs, the parsed-key cache and replay records.

Framework-free. A session is a record in the store under its id with the session TTL; its
private key is sealed at rest under a key derived from the JWT secret, so a Redis dump alone
does not give the session keys away. Parsed private keys are cached in process for the
session's life, so the hot path never parses PEM. Replay records (J's ``jti``) may live in a
store of their own (``HYBRID_REPLAY_STORE_URL`` / ``HYBRID_REPLAY_KEY_PREFIX``).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .core import aead, rsa
from .core.encoding import b64decode, b64encode, b64url_encode, dumps_compact, loads_json_object
from .errors import InvalidPayload, InvalidSession
from .keypool import KeyPool
from .stores.base import SessionStore

_SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JWT_ALGORITHM = "HS256"
_TOKEN_CLAIMS = ("sessionId", "deviceId", "ipAddress", "iat", "exp")
#: A replay record's key holds this many bytes of SHA-256(jti); see ``record_request_id``.
REPLAY_DIGEST_BYTES = 16


def looks_like_session_id(value: str) -> bool:
    """Session ids are lower-case UUIDs; anything else is never looked up in the store."""
    return _SESSION_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Handshake:
    """What the handshake returns to the client (the order is the wire order)."""

    token: str
    public_key: str
    session_id: str
    expires_in: int

    def to_json(self) -> bytes:
        return dumps_compact(
            {
                "token": self.token,
                "publicKey": self.public_key,
                "sessionId": self.session_id,
                "expiresIn": self.expires_in,
            }
        )


@dataclass(frozen=True)
class LiveSession:
    """A session that passed every check for the current request."""

    session_id: str
    device_id: str
    private_key: rsa.PrivateKey = field(repr=False)


class _KeyCache:
    """Parsed session private keys by session id, until their session would expire."""

    def __init__(self, capacity: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[str, tuple[rsa.PrivateKey, float]] = OrderedDict()
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()

    def get(self, session_id: str) -> rsa.PrivateKey | None:
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            if entry[1] <= self._clock():
                del self._entries[session_id]
                return None
            self._entries.move_to_end(session_id)
            return entry[0]

    def put(self, session_id: str, key: rsa.PrivateKey, expires_at: float) -> None:
        with self._lock:
            self._entries[session_id] = (key, expires_at)
            self._entries.move_to_end(session_id)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def discard(self, session_id: str) -> None:
        with self._lock:
            self._entries.pop(session_id, None)


class _VerifiedTokens:
    """Claims of tokens already verified, by token, until their ``exp``.

    Verifying an HS256 JWT costs more than the rest of an S request's checks; a client sends
    the same token with every request of its session. A token's claims never change, so they
    are kept until the token expires (the store is still asked whether the session lives, so
    a DELETE takes effect at once on every process). Bounded: least recently used go first.
    """

    def __init__(self, capacity: int) -> None:
        self._entries: OrderedDict[str, dict[str, object]] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, token: str) -> dict[str, object] | None:
        with self._lock:
            claims = self._entries.get(token)
            if claims is None:
                return None
            if not time.time() < claims["exp"]:  # type: ignore[operator]  # PyJWT's clock
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return claims

    def put(self, token: str, claims: dict[str, object]) -> None:
        with self._lock:
            self._entries[token] = claims
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


class SessionManager:
    """Create, check and end handshake sessions; record replay ids. All state is in ``store``
    (replay records in ``replay_store``, which defaults to ``store``).

    Usage::

        sessions = SessionManager(store_from_url("redis://..."), jwt_secret=secret)
        handshake = sessions.create(device_id, ip_address)
        live = sessions.verify(token, device_id, ip_address)   # InvalidSession if not
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        jwt_secret: bytes | str,
        ttl: int = 3600,
        bind_ip: bool = True,
        key_pool: KeyPool | None = None,
        key_cache_size: int = 10_000,
        clock: Callable[[], float] = time.time,
        replay_store: SessionStore | None = None,
    ) -> None:
        secret = jwt_secret.encode() if isinstance(jwt_secret, str) else jwt_secret
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        self.store = store
        self.replay_store = replay_store if replay_store is not None else store
        self.ttl = ttl
        self.bind_ip = bind_ip
        self._jwt_secret = secret
        self._record_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"flask-hybrid session record"
        ).derive(secret)
        self._key_pool = key_pool if key_pool is not None else KeyPool(0)
        self._key_cache = _KeyCache(key_cache_size, clock)
        self._verified_tokens = _VerifiedTokens(key_cache_size)
        # The last record read per session, as stored and parsed: an S request compares the
        # bytes it reads with these instead of parsing the same 2.4 KB of JSON again.
        self._records: OrderedDict[str, tuple[bytes, dict[str, str]]] = OrderedDict()
        self._records_lock = threading.Lock()
        self._records_capacity = key_cache_size
        self._clock = clock

    # -- handshake -------------------------------------------------------------------------
    def create(
        self,
        device_id: str,
        ip_address: str,
        *,
        private_key: rsa.PrivateKey | None = None,
        session_id: str | None = None,
    ) -> Handshake:
        """Make a session key pair and a token naming the session, device and address.

        ``private_key`` and ``session_id`` are for tests with known-answer vectors.
        """
        private_key = private_key or self._key_pool.take()
        session_id = session_id or str(uuid.uuid4())
        now = int(self._clock())
        public_pem = rsa.public_pem(private_key)
        record = {
            "privateKey": self._seal_private_key(session_id, rsa.private_pem(private_key)),
            "publicKey": public_pem,
            "deviceId": device_id,
            "ipAddress": ip_address,
        }
        self.store.set(self._store_key(session_id), dumps_compact(record), self.ttl)
        self._key_cache.put(session_id, private_key, now + self.ttl)
        claims = {
            "sessionId": session_id,
            "deviceId": device_id,
            "ipAddress": ip_address,
            "iat": now,
            "exp": now + self.ttl,
        }
        token = jwt.encode(claims, self._jwt_secret, algorithm=_JWT_ALGORITHM)
        return Handshake(token, public_pem, session_id, self.ttl)

    # -- checks ----------------------------------------------------------------------------
    def read_token(self, token: str | None) -> dict[str, object]:
        """The claims of a valid, unexpired token; :class:`InvalidSession` otherwise."""
        if not token or len(token) > 4096:
            raise InvalidSession("token_missing" if not token else "token_invalid")
        cached = self._verified_tokens.get(token)
        if cached is not None:
            return cached
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=[_JWT_ALGORITHM],
                options={"require": list(_TOKEN_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidSession("token_expired") from None
        except jwt.PyJWTError:
            raise InvalidSession("token_invalid") from None
        session_id = claims.get("sessionId")
        if not isinstance(session_id, str) or not looks_like_session_id(session_id):
            raise InvalidSession("token_invalid")
        if isinstance(claims["exp"], (int, float)):
            self._verified_tokens.put(token, claims)
        return claims

    def verify(
        self, token: str | None, device_id: str | None, ip_address: str | None
    ) -> LiveSession:
        """Token valid, session live, device (and address, when bound) matching."""
        claims = self.read_token(token)
        session_id = str(claims["sessionId"])
        record = self._load_record(session_id)
        device_id = self._check_binding(claims, record, device_id, ip_address)
        return LiveSession(session_id, device_id, self._private_key(session_id, record))

    def exists(self, session_id: str) -> bool:
        """Whether a live session has this id (for J's session ``kid`` resolution)."""
        return looks_like_session_id(session_id) and (
            self.store.get(self._store_key(session_id)) is not None
        )

    def end(self, token: str | None, device_id: str | None, ip_address: str | None) -> None:
        """Delete the session a valid token names, checked as :meth:`verify` checks a request
        (token, live record, device and, when bound, address); the token is refused afterwards.
        """
        claims = self.read_token(token)
        session_id = str(claims["sessionId"])
        record = self._load_record(session_id)
        self._check_binding(claims, record, device_id, ip_address)
        self._key_cache.discard(session_id)
        if not self.store.delete(self._store_key(session_id)):
            raise InvalidSession("session_gone")

    def record_request_id(self, jti: str, ttl: int) -> bool:
        """Remember a J ``jti`` for ``ttl`` seconds; False when it was already seen (across every
        process that shares the replay store).

        The record is as small as one Redis key can be: ``jti:`` and the first 16 bytes of
        SHA-256(jti), base64url (22 characters, whatever the jti's length), holding ``b"1"``
        (Redis keeps a small integer inside the object, or shares it: less than an empty
        string's allocation). 128 bits are collision-safe here: a collision can only make a
        fresh request look replayed (409), never let a replay through; by chance it takes
        ~2^64 live records, and on purpose a second preimage of another client's jti (2^128).
        """
        digest = hashlib.sha256(jti.encode("ascii")).digest()[:REPLAY_DIGEST_BYTES]
        return self.replay_store.add(f"jti:{b64url_encode(digest)}", b"1", ttl)

    # -- internals -------------------------------------------------------------------------
    @staticmethod
    def _store_key(session_id: str) -> str:
        return f"session:{session_id}"

    def _check_binding(
        self,
        claims: dict[str, object],
        record: dict[str, str],
        device_id: str | None,
        ip_address: str | None,
    ) -> str:
        """The device id, once token, stored record and request agree on it (and the address)."""
        if device_id is None or not (claims["deviceId"] == record["deviceId"] == device_id):
            raise InvalidSession("device_mismatch")
        if self.bind_ip and not (claims["ipAddress"] == record["ipAddress"] == ip_address):
            raise InvalidSession("address_mismatch")
        return device_id

    def _load_record(self, session_id: str) -> dict[str, str]:
        raw = self.store.get(self._store_key(session_id))
        if raw is None:
            self._key_cache.discard(session_id)
            with self._records_lock:
                self._records.pop(session_id, None)
            raise InvalidSession("session_gone")
        with self._records_lock:
            known = self._records.get(session_id)
        if known is not None and known[0] == raw:
            return known[1]
        try:
            record = loads_json_object(raw)
        except InvalidPayload:
            raise InvalidSession("session_unreadable") from None
        with self._records_lock:
            self._records[session_id] = (raw, record)
            self._records.move_to_end(session_id)
            while len(self._records) > self._records_capacity:
                self._records.popitem(last=False)
        return record

    def _private_key(self, session_id: str, record: dict[str, str]) -> rsa.PrivateKey:
        key = self._key_cache.get(session_id)
        if key is None:
            pem = self._open_private_key(session_id, record["privateKey"])
            key = rsa.load_private_key(pem, generated_here=True)
            self._key_cache.put(session_id, key, self._clock() + self.ttl)
        return key

    def _seal_private_key(self, session_id: str, pem: bytes) -> str:
        iv, ciphertext, tag = aead.seal(self._record_key, pem, aad=session_id.encode())
        return b64encode(iv + ciphertext + tag)

    def _open_private_key(self, session_id: str, sealed: str) -> bytes:
        try:
            raw = b64decode(sealed)
            return aead.open_(
                self._record_key,
                raw[: aead.IV_SIZE],
                raw[aead.IV_SIZE : -aead.TAG_SIZE],
                raw[-aead.TAG_SIZE :],
                aad=session_id.encode(),
            )
        except InvalidPayload:  # sealed under another secret: the session is lost
            raise InvalidSession("session_unreadable") from None
