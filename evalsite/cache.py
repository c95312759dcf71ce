"""The shared Redis cache, with every value signed so that Redis cannot make us run code.

Django's RedisCache pickles values, and unpickling runs whatever the bytes say: anyone who can
write to the Redis database (another service on the network, a leaked password) could run code in
every web process. Here each pickle carries an HMAC-SHA256 keyed from SECRET_KEY, checked before
it is unpickled; a value without a valid one is logged and read as a miss. Integers stay plain, as
Django stores them, so that incr() keeps working (an integer cannot run code).

The cached values (leaderboards, rendered template fragments) stay pickles rather than JSON
because they hold tuples, dates and safe strings that JSON would turn into something else.

The default cache, used when MERGEABLE_CACHE_URL is unset, is Django's in-process LocMemCache:
only the process itself can write to it, so it needs no signature.
"""

from __future__ import annotations

import logging
import pickle

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.crypto import constant_time_compare, salted_hmac

log = logging.getLogger(__name__)

_MAGIC = b"mergeable-signed:"
_MAC_LENGTH = 32  # bytes of HMAC-SHA256
_SALT = "evalsite.cache"


class UnsignedValue(Exception):
    """A cached value without a valid signature: not written by Mergeable."""


def _mac(payload: bytes) -> bytes:
    return salted_hmac(_SALT, payload, algorithm="sha256").digest()


class SignedSerializer:
    def dumps(self, value) -> bytes | int:
        if type(value) is int:  # as RedisSerializer: plain, for incr(); never a bool
            return value
        payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        return _MAGIC + _mac(payload) + payload

    def loads(self, data: bytes):
        try:
            return int(data)
        except ValueError:
            pass
        if not data.startswith(_MAGIC):
            raise UnsignedValue
        signed = data[len(_MAGIC) :]
        mac, payload = signed[:_MAC_LENGTH], signed[_MAC_LENGTH:]
        if not constant_time_compare(mac, _mac(payload)):
            raise UnsignedValue
        return pickle.loads(payload)  # noqa: S301 - signed by us, checked above


class SignedRedisCacheClient(RedisCacheClient):
    def __init__(self, servers, **options) -> None:
        super().__init__(servers, serializer=SignedSerializer, **options)

    def get(self, key, default):
        try:
            return super().get(key, default)
        except UnsignedValue:
            _refused(key)
            return default

    def get_many(self, keys):
        keys = list(keys)
        found = {}
        for key, data in zip(keys, self.get_client(None).mget(keys), strict=True):
            if data is None:
                continue
            try:
                found[key] = self._serializer.loads(data)
            except UnsignedValue:
                _refused(key)
        return found


class SignedRedisCache(RedisCache):
    """RedisCache whose values are signed pickles (see the module's docstring)."""

    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = SignedRedisCacheClient


def _refused(key: str) -> None:
    # After an upgrade, values cached unsigned by the old code land here once each.
    log.warning("ignored cache value %r: not signed by this site", key)
