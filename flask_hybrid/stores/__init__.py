"""Session stores: one small protocol, an in-process and a Redis backend, picked by URL."""

from __future__ import annotations

from .base import SessionStore as SessionStore
from .base import StoreError as StoreError
from .base import store_from_url as store_from_url
from .memory import MemoryStore as MemoryStore
from .redis import RedisStore as RedisStore

__all__ = ["MemoryStore", "RedisStore", "SessionStore", "StoreError", "store_from_url"]
