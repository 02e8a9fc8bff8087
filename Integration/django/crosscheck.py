"""Django's side of the test that Tandem and Django share one cache (Tests/TandemTests/DjangoSharingTests.swift).

    python3 crosscheck.py BACKEND LOCATION KEY_PREFIX write   # stores the values below under "py:<name>"
    python3 crosscheck.py BACKEND LOCATION KEY_PREFIX read    # checks what Tandem stored under "sw:<name>"

BACKEND is redis (Django's RedisCache), memcached[:COMPRESSOR] (PyMemcacheCache, with pymemcache's
CompressedSerde over that compressor's module functions: zlib or lzma), django-redis[:COMPRESSOR]
(django-redis 6.0's RedisCache with its default pickle serializer and that compressor: zlib, gzip,
lzma, lz4 or zstd) or django-redis-json[:COMPRESSOR] (with its JSONSerializer: the values that have a
JSON form, as json.loads gives them back); LOCATION a redis:// URL or host:port; VERSION is 3 on both
sides.
`read` prints "ok" when every value equals the one below, else one line per difference.

    python3 crosscheck.py BACKEND LOCATION KEY_PREFIX session-login ENGINE       # prints "KEY USER_PK"
    python3 crosscheck.py BACKEND LOCATION KEY_PREFIX session-check ENGINE KEY   # prints "ok" or why not

`session-login` logs a new user in through Django's test client with SESSION_ENGINE
django.contrib.sessions.backends.ENGINE (cache or cached_db) and prints the session cookie's value and
the user's primary key; `session-check` loads the session KEY that Tandem wrote with Django's
SessionStore and checks its data (see SESSION below).
"""
import datetime
import decimal
import sys
import uuid

import django
from django.conf import settings

BACKENDS = {
    "redis": "django.core.cache.backends.redis.RedisCache",
    "memcached": "django.core.cache.backends.memcached.PyMemcacheCache",
    "django-redis": "django_redis.cache.RedisCache",
    "django-redis-json": "django_redis.cache.RedisCache",
}
# What django-redis's JSONSerializer cannot hold (Django's JSON encoder refuses bytes and sets).
NOT_JSON = {"bytes", "set"}
COMPRESSORS = {
    "zlib": "django_redis.compressors.zlib.ZlibCompressor",
    "gzip": "django_redis.compressors.gzip.GzipCompressor",
    "lzma": "django_redis.compressors.lzma.LzmaCompressor",
    "lz4": "django_redis.compressors.lz4.Lz4Compressor",
    "zstd": "django_redis.compressors.zstd.ZStdCompressor",
}

# The values both sides write and expect, by name (the Swift test has the same list).
VALUES = {
    "text": "héllo ☃ 😀",
    "int": 42,
    "negative": -7,
    "float": 2.5,
    "bool": True,
    "bytes": b"\x00\x01\xff",
    "none": None,
    "list": [1, 2, 3],
    "dict": {"a": 1, "b": 2},
    "set": {"x", "y"},
    "datetime": datetime.datetime(2025, 12, 6, 5, 46, 40, 500000, tzinfo=datetime.timezone.utc),
    "decimal": decimal.Decimal("19.9"),
    "uuid": uuid.UUID("12345678-90ab-cdef-1234-567890abcdef"),
    "profile": {"name": "Zoë", "age": 41, "tags": ["a", "b"], "limits": {"daily": 5}},
    "long": "lorem ipsum " * 40,
}


# What Tandem's session test writes into a session, and Django must load.
SESSION = {"_auth_user_id": "7", "cart": [1, 2], "theme": "dark"}


def main():
    backend, location, prefix, action = sys.argv[1:5]
    backend, _, compressor = backend.partition(":")
    cache_settings = {"BACKEND": BACKENDS[backend], "LOCATION": location, "KEY_PREFIX": prefix, "VERSION": 3}
    options = {}
    if compressor and backend == "memcached":
        import lzma
        import zlib
        from pymemcache.serde import CompressedSerde
        module = {"zlib": zlib, "lzma": lzma}[compressor]
        options["serde"] = CompressedSerde(compress=module.compress, decompress=module.decompress)
    elif compressor:
        options["COMPRESSOR"] = COMPRESSORS[compressor]
    json_format = backend == "django-redis-json"
    if json_format:
        options["SERIALIZER"] = "django_redis.serializers.json.JSONSerializer"
    if options:
        cache_settings["OPTIONS"] = options
    extra = {}
    if action.startswith("session-"):
        extra = dict(
            SECRET_KEY="tandem-crosscheck", USE_TZ=True,
            INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            SESSION_ENGINE="django.contrib.sessions.backends." + sys.argv[5],
            PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        )
    settings.configure(CACHES={"default": cache_settings}, **extra)
    django.setup()
    if action == "session-login":
        from django.contrib.auth.models import User
        from django.core.management import call_command
        from django.test import Client
        call_command("migrate", verbosity=0)
        user = User.objects.create_user("ada", password="lovelace")
        client = Client()
        assert client.login(username="ada", password="lovelace")
        print(client.cookies[settings.SESSION_COOKIE_NAME].value, user.pk)
        return
    if action == "session-check":
        from importlib import import_module
        if sys.argv[5] == "cached_db":
            from django.core.management import call_command
            call_command("migrate", verbosity=0)
        store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=sys.argv[6])
        data = dict(store.items())
        print("ok" if data == SESSION else f"loaded {data!r}")
        return
    from django.core.cache import cache

    values = VALUES
    if json_format:
        import json
        from django.core.serializers.json import DjangoJSONEncoder
        values = {k: v for k, v in VALUES.items() if k not in NOT_JSON}
    if action == "write":
        for name, value in values.items():
            cache.set("py:" + name, value, timeout=600)
        cache.set("py:counter", 10, timeout=600)
        cache.set("py:short", "gone soon", timeout=1)
        return
    problems = []
    if compressor and backend == "memcached":
        # What Tandem stored carries pymemcache's compressed flag (not merely readable).
        from pymemcache.client.base import Client

        class Raw:
            def serialize(self, key, value):
                return value, 0

            def deserialize(self, key, value, flags):
                return value, flags

        host, port = location.rsplit(":", 1)
        raw = Client((host, int(port)), serde=Raw()).get(cache.make_key("sw:long"))
        if raw is None or not raw[1] & 8:
            problems.append(f"long: not stored with the compressed flag: {raw!r:.60}")
    elif compressor:
        # What Tandem stored is compressed as django-redis compresses it (not merely readable).
        raw = cache.client.get_client().get(cache.client.make_key("sw:long"))
        if raw is None or raw[:1] in (b"\x80", b'"'):
            problems.append(f"long: not stored compressed: {raw[:20]!r}")
    for name, expected in values.items():
        if json_format:  # what json.loads gives back
            expected = json.loads(json.dumps(expected, cls=DjangoJSONEncoder))
        got = cache.get("sw:" + name, default="<missing>")
        if got != expected or type(got) is not type(expected):
            problems.append(f"{name}: expected {expected!r}, read {got!r}")
    # A timeout Tandem set is the key's TTL on the server (Redis: read with redis-py; pymemcache has no
    # way to read one).
    if backend != "memcached":
        import redis
        ttl = redis.Redis.from_url(location).ttl(str(cache.make_key("sw:ttl")))
        # Above 300 (the default timeout of either side) and at most 500, however long this process
        # took to start on a loaded machine.
        if not 300 < ttl <= 500:
            problems.append(f"ttl: Tandem's 500 s timeout is a TTL of {ttl}")
    # A counter Tandem made and incremented: Django increments it too.
    try:
        if cache.incr("sw:counter") != 4:
            problems.append("counter: incr did not give 4")
    except ValueError as e:
        problems.append(f"counter: {e}")
    print("\n".join(problems) or "ok")


if __name__ == "__main__":
    main()
