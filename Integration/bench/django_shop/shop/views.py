"""The shop's product page and dashboard, the way Django users write them, both ways they deploy.

Sync views (gunicorn with threads): cache.get / cache.set, the five calls one after another.
Async views (uvicorn): cache.aget / cache.aset, the calls at once with httpx.AsyncClient and
asyncio.gather. The work is the same as the Swift shop's: a product read from Redis (computed and
stored on a miss after a 5 ms "query"), and a dashboard of five JSON documents, the recommendations
part cached for 30 s, each call bounded by a 500 ms deadline.
"""
import asyncio
import json
import os
import time

import httpx
from django.core.cache import cache
from django.http import HttpResponse

UPSTREAM = os.environ.get("SHOP_UPSTREAM", "http://127.0.0.1:8081")
SERVICES = ["users", "orders", "recommendations", "inventory", "reviews"]
DEADLINE = 0.5


def make_product(product_id):
    return {
        "id": product_id,
        "name": f"Product {product_id}",
        "price": 100 + sum(product_id.encode()) % 900,
        "description": f"A fine product, number {product_id}, in stock and shipped within two days.",
    }


def product(request, product_id):
    key = f"product:{product_id}"
    body = cache.get(key)
    if body is None:
        time.sleep(0.005)
        body = json.dumps(make_product(product_id), sort_keys=True, separators=(",", ":")).encode()
        cache.add(key, body, 300)
        body = cache.get(key) or body
    return HttpResponse(body, content_type="application/json")


async def product_async(request, product_id):
    key = f"product:{product_id}"
    body = await cache.aget(key)
    if body is None:
        await asyncio.sleep(0.005)
        body = json.dumps(make_product(product_id), sort_keys=True, separators=(",", ":")).encode()
        await cache.aadd(key, body, 300)
        body = await cache.aget(key) or body
    return HttpResponse(body, content_type="application/json")


def compose(parts):
    missing = [name for name in SERVICES if parts.get(name) is None]
    out = b"{" + b"".join(
        f'"{name}":'.encode() + (parts.get(name) or b"null") + b"," for name in SERVICES
    )
    return HttpResponse(out + json.dumps({"missing": missing}, separators=(",", ":"))[1:].encode(), content_type="application/json")


_sync_client = httpx.Client(timeout=DEADLINE)


def fetch_sync(name):
    try:
        r = _sync_client.get(f"{UPSTREAM}/{name}.json")
        return r.content if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


def dashboard(request):
    parts = {}
    reco = cache.get("dashboard:recommendations")
    if reco is None:
        reco = fetch_sync("recommendations")
        if reco is not None:
            cache.set("dashboard:recommendations", reco, 30)
    parts["recommendations"] = reco
    for name in SERVICES:
        if name != "recommendations":
            parts[name] = fetch_sync(name)
    return compose(parts)


_async_client = None


async def fetch_async(client, name):
    try:
        r = await client.get(f"{UPSTREAM}/{name}.json")
        return r.content if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


async def recommendations(client):
    reco = await cache.aget("dashboard:recommendations")
    if reco is None:
        reco = await fetch_async(client, "recommendations")
        if reco is not None:
            await cache.aset("dashboard:recommendations", reco, 30)
    return reco


async def dashboard_async(request):
    global _async_client
    if _async_client is None:
        _async_client = httpx.AsyncClient(timeout=DEADLINE, limits=httpx.Limits(max_connections=256))
    others = [name for name in SERVICES if name != "recommendations"]
    results = await asyncio.gather(recommendations(_async_client), *(fetch_async(_async_client, n) for n in others))
    parts = {"recommendations": results[0]}
    parts.update(zip(others, results[1:]))
    return compose(parts)
