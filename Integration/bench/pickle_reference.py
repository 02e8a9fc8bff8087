"""The reference of `tandem-bench django-codec`: CPython's C pickle (what Django's cache backends use)
encoding and decoding the same two values as Tandem, in the same run.

    python3 pickle_reference.py SECONDS ROUNDS
prints one JSON object: for "session" and "fragment", the pickle Python wrote (hex) and the best
nanoseconds per pickle.dumps(value, 5) and per pickle.loads(those bytes) over ROUNDS rounds.
"""
import json
import pickle
import sys
import time

SESSION = {
    "_auth_user_id": "42",
    "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
    "_auth_user_hash": "6f1ed002ab5595859014ebf0951522d96f1ed002ab5595859014ebf0951522d9",
    "_session_expiry": 1209600,
    "cart": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
    "theme": "dark",
}
FRAGMENT = "".join(f'<li class="item">Product {i}</li>\n' for i in range(400))[:10240]


def best_ns(fn, seconds, rounds):
    n = 1
    while True:  # calibrate: a batch of about seconds / 10
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > seconds / 10:
            break
        n *= 2
    best = float("inf")
    for _ in range(rounds):
        batches, ops, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(n):
                fn()
            ops += n
        best = min(best, (time.perf_counter() - start) / ops * 1e9)
    return best


def main():
    seconds, rounds = float(sys.argv[1]), int(sys.argv[2])
    out = {}
    for name, value in [("session", SESSION), ("fragment", FRAGMENT)]:
        data = pickle.dumps(value, 5)
        assert pickle.loads(data) == value
        out[name] = {
            "pickle": data.hex(),
            "dumps_ns": best_ns(lambda: pickle.dumps(value, 5), seconds, rounds),
            "loads_ns": best_ns(lambda: pickle.loads(data), seconds, rounds),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
