"""Writes pickle-corpus.json (real pickles made by CPython, each with the value it holds) to standard
output, and compressed.json (one input through each of django-redis 6.0's compressors) beside itself.

Run with the Python that Django runs on (3.11 here), with django-redis, lz4 and pyzstd installed:
    python3 make_pickle_corpus.py > pickle-corpus.json
"""
import datetime, decimal, json, pickle, sys, uuid
from collections import OrderedDict

def tagged(v):
    """The value as a tagged JSON tree, which the Swift test turns into a PythonValue."""
    if v is None: return ["none"]
    if isinstance(v, bool): return ["bool", v]
    if isinstance(v, int): return ["int", str(v)]
    if isinstance(v, float): return ["float", repr(v)]
    if isinstance(v, str): return ["str", v]
    if isinstance(v, (bytes, bytearray)): return ["bytes", bytes(v).hex()]
    if isinstance(v, list): return ["list", [tagged(x) for x in v]]
    if isinstance(v, tuple): return ["tuple", [tagged(x) for x in v]]
    if isinstance(v, (set, frozenset)): return ["set", [tagged(x) for x in v]]
    if isinstance(v, dict): return ["dict", [[tagged(k), tagged(x)] for k, x in v.items()]]
    if isinstance(v, datetime.datetime):
        off = None if v.tzinfo is None else int(v.utcoffset().total_seconds())
        return ["datetime", [v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, off]]
    if isinstance(v, decimal.Decimal): return ["decimal", str(v)]
    if isinstance(v, uuid.UUID): return ["uuid", str(v)]
    raise TypeError(type(v))

session = {
    "_auth_user_id": "42", "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "6f1ed002ab5595859014ebf0951522d9", "_session_expiry": 1209600,
    "cart": [{"sku": "A-1", "qty": 2, "price": decimal.Decimal("19.90")}], "seen": {"p1", "p2"},
    "last_login": datetime.datetime(2026, 12, 7, 16, 5, 4, 123456, tzinfo=datetime.timezone.utc),
}
values = [
    None, True, False, 0, 1, 255, 256, 65535, 65536, -1, -129, 2**31 - 1, -2**31, 2**31, 2**63 - 1, -2**63,
    0.0, 1.5, -2.25e-300, 1e308, "", "abc", "zürich ☃ 😀", "x" * 300, b"", b"\x00\xffxy", b"z" * 300, bytearray(b"ab"),
    [], [1], [1, "a", None], list(range(1100)), (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), {1, 2}, frozenset(["a"]), set(),
    {}, {"a": 1}, {"a": {"b": [1, {"c": None}]}}, {1: "one", 2: "two"}, OrderedDict([("z", 1), ("a", 2)]),
    {str(i): i for i in range(1100)},
    datetime.datetime(2024, 5, 6, 7, 8, 9, 123456), datetime.datetime(1, 1, 1), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
    datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))),
    decimal.Decimal("1.10"), decimal.Decimal("-0.000001"), uuid.UUID(int=0), uuid.UUID("12345678-90ab-cdef-1234-567890abcdef"),
    uuid.UUID(int=2**128 - 1), session,
]
shared = [1, 2]
values.append({"x": shared, "y": shared})

corpus = []
for v in values:
    for proto in range(0, 6):
        if isinstance(v, (datetime.datetime, decimal.Decimal, uuid.UUID, OrderedDict, bytearray, bytes, set, frozenset)) and proto < 2:
            continue
        if isinstance(v, dict) and any(isinstance(x, (datetime.datetime, decimal.Decimal, set)) for x in v.values()) and proto < 2:
            continue
        if isinstance(v, (list, dict)) and len(v) > 1000 and proto not in (2, 5):
            continue
        corpus.append({"protocol": proto, "type": type(v).__name__, "pickle": pickle.dumps(v, proto).hex(), "value": tagged(v)})
from django.conf import settings
settings.configure()
from django_redis.compressors import gzip as dr_gzip, lz4 as dr_lz4, lzma as dr_lzma, zlib as dr_zlib, zstd as dr_zstd
plain = ("lorem ipsum " * 40).encode()
compressed = {name: module.compress(plain) for name, module in [
    ("zlib", dr_zlib.ZlibCompressor({})), ("gzip", dr_gzip.GzipCompressor({})), ("lzma", dr_lzma.LzmaCompressor({})),
    ("lz4", dr_lz4.Lz4Compressor({})), ("zstd", dr_zstd.ZStdCompressor({}))]}
with open(__import__("os").path.join(__import__("os").path.dirname(__file__), "compressed.json"), "w") as f:
    json.dump({k: v.hex() for k, v in compressed.items()}, f, indent=1)

print('{"python": %s, "corpus": [' % json.dumps(sys.version.split()[0]))
print(",\n".join(json.dumps(entry, ensure_ascii=False) for entry in corpus))
print("]}")
