#!/usr/bin/env python3
"""Tandem's HTTP upstream for tests and benchmarks (standard library asyncio only).

Endpoints:
  /delay/<ms>      answer "ok" after <ms> milliseconds
  /status/<code>   answer with that status
  /bytes/<n>       n bytes of body
  /flaky/<n>?id=X  503 for the first n requests with id X, then 200 (/flaky-count?id=X: requests seen)
  /slow-first/<ms>?id=X  the first request with id X answers after <ms>, later ones at once
  /cacheable?id=X&cc=...&etag=...  a response with the caching headers asked for (/cacheable-count?id=X)
  /jitter?fast=5&slow=200&p=0.02  a fast answer, or with probability p a slow one
  /echo            the request (method, path, headers, every header line, body) as JSON
  /garbage         bytes that are not HTTP, then close
  /close           headers promising 1000 bytes, 10 bytes, then close (a reset mid-body)
  /slow-body       a body trickled one byte every 100 ms (?n=bytes, default 50)
  /never           read the request and never answer
  /redirect/<n>    redirect n times, then 200
  /stats           {"connections": accepted connections so far}; with ?client=ID also
                   "client_connections": connections that carried the header X-Client: ID
Keep-alive (HTTP/1.1) is supported. The listen backlog is large (Python's default of 5 drops SYNs).
"""
import argparse
import asyncio
import json
import random
import time
from email.utils import formatdate
from urllib.parse import unquote
import ssl

STATE = {"connections": 0}
CLIENTS = {}  # X-Client header value -> ids of the connections that carried it
FLAKY = {}  # /flaky id -> requests seen
CACHEABLE = {}  # /cacheable id -> counts


def http_date(t):
    return formatdate(t, usegmt=True)
REASONS = {200: "OK", 201: "Created", 204: "No Content", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
           400: "Bad Request", 404: "Not Found", 418: "I'm a teapot", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


def response(status, body=b"", headers=None, keep_alive=True):
    head = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Length: {len(body)}",
            "Connection: " + ("keep-alive" if keep_alive else "close")]
    for k, v in (headers.items() if isinstance(headers, dict) else headers or []):
        head.append(f"{k}: {v}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def handle(reader, writer):
    STATE["connections"] += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = (lines[0].split(" ") + ["", "", ""])[:3]
            headers = {}
            header_lines = [line for line in lines[1:] if line]
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = b""
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            keep = headers.get("connection", "").lower() != "close"
            if "x-client" in headers:
                CLIENTS.setdefault(headers["x-client"], set()).add(id(writer))
            path, _, query = target.partition("?")
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            parts = [p for p in path.split("/") if p]
            name = parts[0] if parts else ""
            arg = parts[1] if len(parts) > 1 else ""
            if name == "delay":
                await asyncio.sleep(int(arg or 0) / 1000)
                writer.write(response(200, b"ok", keep_alive=keep))
            elif name == "status":
                code = int(arg or 200)
                writer.write(response(code, f"status {code}".encode(), keep_alive=keep))
            elif name == "bytes":
                r = response(200, b"x" * int(arg or 0), keep_alive=keep)
                # A HEAD answer has the GET answer's headers and no body.
                writer.write(r.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" if method == "HEAD" else r)
            elif name == "echo":
                payload = {"method": method, "path": target, "headers": headers, "header_lines": header_lines,
                           "body": body.decode("utf-8", "replace")}
                writer.write(response(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, keep))
            elif name == "garbage":
                writer.write(b"THIS IS NOT HTTP\x00\x01\x02\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            elif name == "close":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 10)
                await writer.drain()
                writer.transport.abort()
                return
            elif name == "slow-body":
                n = int(params.get("n", "50"))
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n".encode())
                for _ in range(n):
                    await writer.drain()
                    await asyncio.sleep(0.1)
                    writer.write(b"z")
            elif name == "never":
                # Never answer, but let go when the client hangs up (up to an hour), so that
                # abandoned requests do not pile up as half-closed sockets.
                try:
                    await asyncio.wait_for(reader.read(), 3600)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
                return
            elif name == "redirect":
                n = int(arg or 0)
                if n > 0:
                    writer.write(response(302, b"", {"Location": f"/redirect/{n - 1}"}, keep))
                else:
                    writer.write(response(200, b"arrived", keep_alive=keep))
            elif name == "flaky":
                # /flaky/<n>?id=X: 503 for the first n requests with this id, then 200; every request counted.
                key = params.get("id", "")
                FLAKY[key] = FLAKY.get(key, 0) + 1
                if FLAKY[key] <= int(arg or 0):
                    writer.write(response(503, b"flaky", keep_alive=keep))
                else:
                    writer.write(response(200, b"ok", keep_alive=keep))
            elif name == "slow-first":
                # /slow-first/<ms>?id=X: the first request with id X answers after <ms>, later ones at once;
                # the body names the request's number.
                key = "slow-first:" + params.get("id", "")
                FLAKY[key] = FLAKY.get(key, 0) + 1
                n = FLAKY[key]
                if n == 1:
                    await asyncio.sleep(int(arg or 0) / 1000)
                writer.write(response(200, f"request {n}".encode(), keep_alive=keep))
            elif name == "jitter":
                # /jitter?fast=5&slow=200&p=0.02: answers after `fast` ms, or with probability p after `slow` ms.
                slow = random.random() < float(params.get("p", "0.02"))
                await asyncio.sleep(int(params.get("slow" if slow else "fast", "200" if slow else "5")) / 1000)
                writer.write(response(200, b"slow" if slow else b"fast", keep_alive=keep))
            elif name == "cacheable":
                # /cacheable?id=X&cc=<Cache-Control>&etag=E&lm=1&vary=<header>&expires=<s>&age=<s>&fail_after=<n>:
                # a response with those caching headers; the body counts the full answers for id X;
                # If-None-Match equal to the ETag (or If-Modified-Since with lm) answers 304.
                # cc2= and vary2= add a second Cache-Control or Vary line, cookie=1 a Set-Cookie line;
                # a request with Range gets a 206 ("part N"); any method but GET and HEAD gets a 204
                # ("changes" counted) with Location: <location=> when given.
                key = "cacheable:" + params.get("id", "")
                c = CACHEABLE.setdefault(key, {"requests": 0, "full": 0, "not_modified": 0, "partial": 0, "changes": 0})
                if method not in ("GET", "HEAD"):
                    c["changes"] += 1
                    extra = [("Location", unquote(params["location"]))] if "location" in params else []
                    writer.write(response(204, b"", extra, keep))
                    await writer.drain()
                    if not keep:
                        return
                    continue
                c["requests"] += 1
                etag = params.get("etag")
                hdrs = {"Date": http_date(time.time())}
                if "cc" in params:
                    hdrs["Cache-Control"] = unquote(params["cc"])
                if etag:
                    hdrs["ETag"] = '"' + etag + '"'
                if "lm" in params:
                    hdrs["Last-Modified"] = "Mon, 01 Jan 2024 00:00:00 GMT"
                if "vary" in params:
                    hdrs["Vary"] = params["vary"]
                if "expires" in params:
                    hdrs["Expires"] = http_date(time.time() + int(params["expires"]))
                if "age" in params:
                    hdrs["Age"] = params["age"]
                hdrs = list(hdrs.items())
                if "cc2" in params:
                    hdrs.append(("Cache-Control", unquote(params["cc2"])))
                if "vary2" in params:
                    hdrs.append(("Vary", params["vary2"]))
                if "cookie" in params:
                    hdrs.append(("Set-Cookie", f"session=s{c['full'] + 1}; Path=/"))
                fail_after = int(params.get("fail_after", "0"))
                if "range" in headers:
                    c["partial"] += 1
                    hdrs.append(("Content-Range", "bytes 0-5/100"))
                    writer.write(response(206, f"part {c['partial']}".encode(), hdrs, keep))
                elif fail_after and c["requests"] > fail_after:
                    writer.write(response(500, b"failing", keep_alive=keep))
                elif (etag and headers.get("if-none-match") == '"' + etag + '"') or ("lm" in params and "if-modified-since" in headers):
                    c["not_modified"] += 1
                    writer.write(response(304, b"", hdrs, keep))
                else:
                    c["full"] += 1
                    vary_value = " ".join(headers[params[v].lower()] for v in ("vary", "vary2") if params.get(v, "").lower() in headers)
                    writer.write(response(200, f"v{c['full']} {vary_value}".strip().encode(), hdrs, keep))
            elif name == "cacheable-count":
                c = CACHEABLE.get("cacheable:" + params.get("id", ""),
                                  {"requests": 0, "full": 0, "not_modified": 0, "partial": 0, "changes": 0})
                writer.write(response(200, json.dumps(c).encode(), {"Content-Type": "application/json"}, keep))
            elif name == "flaky-count":
                writer.write(response(200, str(FLAKY.get(params.get("id", ""), 0)).encode(), keep_alive=keep))
            elif name == "stats":
                stats = dict(STATE)
                if "client" in params:
                    stats["client_connections"] = len(CLIENTS.get(params["client"], ()))
                writer.write(response(200, json.dumps(stats).encode(), {"Content-Type": "application/json"}, keep))
            else:
                writer.write(response(404, b"not found", keep_alive=keep))
            await writer.drain()
            if not keep:
                writer.close()
                return
    except (ConnectionError, asyncio.CancelledError):
        return
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    servers = [await asyncio.start_server(handle, "127.0.0.1", args.port, backlog=1024, limit=1 << 20)]
    if args.tls_port:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
        servers.append(await asyncio.start_server(handle, "127.0.0.1", args.tls_port, ssl=ctx, backlog=1024))
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
