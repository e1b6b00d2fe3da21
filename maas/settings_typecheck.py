"""Settings for mypy's Django plugin only: the test settings with server URLs that nothing connects to.

Never run the platform with these; they let ``mypy`` work in any shell, with or without ``DATABASE_URL``.
"""

from maas import env

with env.fallbacks(DATABASE_URL="postgres://typecheck.invalid/unused", REDIS_URL="redis://typecheck.invalid:6379/0"):
    from maas.settings_test import *  # noqa: F403
