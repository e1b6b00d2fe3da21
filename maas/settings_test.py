"""Test settings: real PostgreSQL and Redis from DATABASE_URL/REDIS_URL, fixed secrets, fast hashing.

The servers come from the environment like in production; with DATABASE_URL/REDIS_URL unset the test suite's plugin
(``tests/plugins/embedded.py``) starts throwaway embedded ones before these settings are read.
"""

import os

from maas import env

with env.fallbacks(SECRET_KEY="test-secret-key", ENCRYPTION_KEYS="T0QxSuNjfWQB0ZzyEnELBSoBQy7Ic4sNf2DTDx1P2Js="):
    from maas.settings import *  # noqa: F403
    from maas.settings import REDIS_URL

# Local engine simulators are ready at once unless a test asks for a start-up time (tests of waking do).
LOCAL_ENGINE_STARTUP_S = env.decimal("LOCAL_ENGINE_STARTUP_S", "0")

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests share one Redis with other runs on this machine; keep their keys apart.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"test{os.getpid()}",
    }
}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LANGUAGE_CODE = "en"
