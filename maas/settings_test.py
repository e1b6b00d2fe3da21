"""Test settings: real PostgreSQL and Redis, from DATABASE_URL/REDIS_URL or throwaway embedded servers."""

import atexit
import os
import tempfile

_owns_embedded = not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"))
if _owns_embedded:
    os.environ["MAAS_EMBEDDED_DIR"] = tempfile.mkdtemp(prefix="maas-test-")
    os.environ.setdefault("MAAS_EMBEDDED_REDIS_PORT", "0")
os.environ.setdefault("SECRET_KEY", "test-secret-key")
os.environ.setdefault("ENCRYPTION_KEYS", "T0QxSuNjfWQB0ZzyEnELBSoBQy7Ic4sNf2DTDx1P2Js=")

from maas.settings import *  # noqa: E402,F401,F403
from maas.settings import EMBEDDED_DIR, REDIS_URL  # noqa: E402

if _owns_embedded:
    from maas import embedded

    atexit.register(embedded.stop, EMBEDDED_DIR, delete=True)

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
