"""The example shop's two views in Django 5.2, for Integration/bench.sh view-product view-dashboard.

Settings come from the environment the benchmark sets: SHOP_REDIS_URL (Django's own RedisCache) and
SHOP_UPSTREAM (the base URL of the dashboard's five documents).
"""
import os

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
USE_TZ = True
DATABASES = {}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("SHOP_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "KEY_PREFIX": "django-shop",
    }
}
LOGGING = {"version": 1, "disable_existing_loggers": True}
