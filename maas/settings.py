"""Settings for the MaaS platform, read from the environment.

Importing them starts nothing and changes no environment variable. ``DATABASE_URL`` and ``REDIS_URL`` are required;
``./dev up`` (``manage.py quickstart``) and the test suite start embedded servers first and set them, marking their
processes with ``MAAS_EMBEDDED`` (see ``maas/embedded.py``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from maas import embedded, env

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env.boolean("DEBUG", False)
ALLOWED_HOSTS = env.listing("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.listing("CSRF_TRUSTED_ORIGINS", [])
# Public base URL of this platform, shown in API snippets and e-mails.
SITE_URL = env.string("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

# --- servers -------------------------------------------------------------------------------------------------
_NO_SERVER = (
    "{name} is not set. Start the platform with `./dev up` (embedded PostgreSQL and Redis; while it runs, manage.py "
    "in another terminal uses the same servers), or set DATABASE_URL and REDIS_URL to your own servers."
)
_database_url = env.string("DATABASE_URL", None)
if _database_url is None:
    raise ImproperlyConfigured(_NO_SERVER.format(name="DATABASE_URL"))
_redis_url = env.string("REDIS_URL", None)
if _redis_url is None:
    raise ImproperlyConfigured(_NO_SERVER.format(name="REDIS_URL"))
# Set by the process that started the embedded servers (quickstart, the test plugin) for itself and its children.
EMBEDDED = env.boolean("MAAS_EMBEDDED", False)
EMBEDDED_DIR = Path(env.string("MAAS_EMBEDDED_DIR", str(embedded.DEFAULT_ROOT)))

# Production (external servers, DEBUG off) must set SECRET_KEY; the embedded default runs with a dev key.
SECRET_KEY = env.string("SECRET_KEY", "dev-insecure-secret-key-change-me" if (DEBUG or EMBEDDED) else None)
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL/REDIS_URL point at external servers")
DATABASES = {"default": dj_database_url.parse(_database_url, conn_max_age=env.integer("DB_CONN_MAX_AGE", 60))}
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
REDIS_URL = _redis_url

# --- secrets at rest -----------------------------------------------------------------------------------------
# Fernet key(s) for kubeconfigs and other secrets at rest; comma-separated, the first encrypts, all decrypt.
_enc = env.listing("ENCRYPTION_KEYS", [])
if not _enc:
    if not DEBUG and not EMBEDDED:
        raise ImproperlyConfigured("ENCRYPTION_KEYS must be set (generate one with: python manage.py genkey)")
    _enc = [base64.urlsafe_b64encode(hashlib.sha256(("maas-dev:" + SECRET_KEY).encode()).digest()).decode()]
ENCRYPTION_KEYS = _enc

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Redoc's files, served from /static/ (the docs work offline)
    "django_htmx",
    "channels",
    "axes",
    "csp",
    "tenancy",
    "catalog",
    "deployments",
    "metering",
    "billing",
    "playground",
    "maas",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.http.RejectNulMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "tenancy.middleware.CurrentOrgMiddleware",
    "tenancy.middleware.UserTimeZoneMiddleware",
    # Last, as django-axes requires: it turns a refused log-in into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "maas.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "tenancy.context.console",
                "billing.context.billing_banner",
            ],
        },
    }
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "maas.asgi.application"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Log-in throttling (django-axes): after AXES_FAILURE_LIMIT failures for one account, or from one IP address, log-ins
# for it are refused until AXES_COOLOFF_MINUTES have passed; a success resets the account's count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.integer("AXES_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.integer("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "tenancy.views.login_locked_out"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "catalog:marketplace"
LOGOUT_REDIRECT_URL = "catalog:marketplace"

# --- i18n ----------------------------------------------------------------------------------------------------
LANGUAGE_CODE = "en"
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = env.string("TIME_ZONE", "Asia/Shanghai")
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve static files straight from the source folders too, so no collectstatic step is needed to run.
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- e-mail --------------------------------------------------------------------------------------------------
EMAIL_BACKEND = env.string("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.string("DEFAULT_FROM_EMAIL", "MaaS <noreply@localhost>")

# --- caches, channels, celery --------------------------------------------------------------------------------
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
SESSION_ENGINE = "django.contrib.sessions.backends.db"
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    if env.boolean("CHANNELS_IN_MEMORY", EMBEDDED)
    else {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
}
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.boolean("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {}

# --- REST framework ------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenancy.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.api.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "MaaS management API",
    "DESCRIPTION": "Management API of the MaaS platform. Authenticate with a session or an `sk-` API key "
    "(`Authorization: Bearer sk-...`). The OpenAI-compatible data plane lives under `/v1`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ loads Redoc from this platform's static files (drf-spectacular-sidecar), never from a CDN.
    "REDOC_DIST": "SIDECAR",
    # The errors every operation may answer are declared once (core/openapi.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.openapi.error_responses"],
}

# --- platform ------------------------------------------------------------------------------------------------
CURRENCY = env.string("CURRENCY", "CNY")
CATALOG_SPECS_DIR = Path(env.string("CATALOG_SPECS_DIR", str(BASE_DIR / "catalog" / "specs")))
# Runtime images the platform may deploy; a spec's versionRequired range picks the newest that satisfies it.
RUNTIME_VERSIONS = {
    "vllm": env.listing("VLLM_VERSIONS", ["0.6.6", "0.7.3", "0.8.5", "0.9.2", "0.10.2"]),
    "sglang": env.listing("SGLANG_VERSIONS", ["0.4.6", "0.4.9", "0.5.2"]),
}
RUNTIME_IMAGES = {
    "vllm": env.string("VLLM_IMAGE", "vllm/vllm-openai:v{version}"),
    "sglang": env.string("SGLANG_IMAGE", "lmsysorg/sglang:v{version}-cu124"),
}

# Inserts of one usage entry refused before it moves to the dead letters (metering/ingestion.py).
USAGE_MAX_ATTEMPTS = env.integer("USAGE_MAX_ATTEMPTS", 5, minimum=1)
# Open requests of gateway workers that died (metering/open_requests.py): a worker without a heartbeat for GRACE
# seconds is dead and the sweeper, run every SWEEP seconds, bills and releases what it left open.
USAGE_OPEN_GRACE_SECONDS = env.integer("USAGE_OPEN_GRACE_SECONDS", 30, minimum=1)
USAGE_SWEEP_SECONDS = env.integer("USAGE_SWEEP_SECONDS", 10, minimum=1)

# --- gateway (/v1) ---------------------------------------------------------------------------------------------
GATEWAY_REDIS_PREFIX = env.string("GATEWAY_REDIS_PREFIX", "maas:gw:")
GATEWAY_MAX_BODY_BYTES = env.integer("GATEWAY_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024)
GATEWAY_CONNECT_TIMEOUT = env.decimal("GATEWAY_CONNECT_TIMEOUT", "5")  # seconds to open an upstream connection
GATEWAY_IDLE_TIMEOUT = env.decimal("GATEWAY_IDLE_TIMEOUT", "120")  # seconds without a byte from upstream
GATEWAY_MAX_ATTEMPTS = env.integer("GATEWAY_MAX_ATTEMPTS", 3, minimum=1)  # replicas tried before the first byte
GATEWAY_BREAKER_FAILURES = env.integer("GATEWAY_BREAKER_FAILURES", 3, minimum=1)  # consecutive, to eject a replica
GATEWAY_BREAKER_COOLDOWN = env.decimal("GATEWAY_BREAKER_COOLDOWN", "5")  # seconds before a half-open probe
GATEWAY_ROUTING = env.string("GATEWAY_ROUTING", "prefix")  # prefix | least | round_robin (benchmarks)
GATEWAY_PREFIX_CHARS = env.integer("GATEWAY_PREFIX_CHARS", 1024, minimum=16)  # leading prompt part for affinity
GATEWAY_LONG_PROMPT_CHARS = env.integer("GATEWAY_LONG_PROMPT_CHARS", 48000, minimum=1)  # above: least loaded
GATEWAY_AFFINITY_SLACK = env.integer("GATEWAY_AFFINITY_SLACK", 4, minimum=0)  # extra in-flight allowed over the mean
GATEWAY_ORG_RPM = env.integer("GATEWAY_ORG_RPM", 0, minimum=0)  # per-org requests per minute, 0 = unlimited
GATEWAY_ORG_TPM = env.integer("GATEWAY_ORG_TPM", 0, minimum=0)  # per-org tokens per minute, 0 = unlimited
GATEWAY_RESERVE_MAX_TOKENS = env.integer("GATEWAY_RESERVE_MAX_TOKENS", 4096, minimum=1)  # when max_tokens is absent
# Balance slices (gateway/admission.py): a worker holds at most 1/FRACTION of an org's available balance, and at most
# MAX, to admit requests without a Redis round trip; FRACTION 0 reserves every request in Redis instead.
GATEWAY_BALANCE_SLICE_FRACTION = env.integer("GATEWAY_BALANCE_SLICE_FRACTION", 16, minimum=0)
GATEWAY_BALANCE_SLICE_MAX = env.decimal("GATEWAY_BALANCE_SLICE_MAX", "20")
# fast: the gateway's own HTTP/1.1 and pipelined RESP clients and the direct uvicorn stream relay (gateway/transport/);
# plain: httpx, redis-py's asyncio client and plain ASGI send. Same behaviour, the plain path costs more CPU.
GATEWAY_TRANSPORT = env.choice("GATEWAY_TRANSPORT", "fast", ("fast", "plain"))
# A stream's open marker records its progress every this many relayed tokens: what a dead worker's stream is billed
# is the tokens relayed at the last write plus this many (never more than reserved).
GATEWAY_PROGRESS_TOKENS = env.integer("GATEWAY_PROGRESS_TOKENS", 32, minimum=1)
# A streamed request held while its service wakes gets its response headers and an SSE comment (": waking") after this
# many seconds, then one every this many, so that clients and proxies do not time out; 0: none (a held stream then
# waits silently, and a wake that takes too long is answered 503 rather than as an error event in the stream).
GATEWAY_WAKE_KEEPALIVE_S = env.integer("GATEWAY_WAKE_KEEPALIVE_S", 10, minimum=0)
MAAS_BALANCE_LOADER = env.string("MAAS_BALANCE_LOADER", "billing.selectors.org_spendable_balance")
CELERY_BEAT_SCHEDULE["metering-ingest-usage"] = {"task": "metering.tasks.ingest_usage_task", "schedule": 5.0}
CELERY_BEAT_SCHEDULE["metering-sweep-open-requests"] = {
    "task": "metering.tasks.sweep_open_requests_task",
    "schedule": float(USAGE_SWEEP_SECONDS),
}

# --- deployments (GPU clusters, model services) ----------------------------------------------------------------
# Price per GPU-hour when no GpuPrice row exists for the region and GPU product.
DEFAULT_GPU_HOURLY_PRICE = env.decimal("DEFAULT_GPU_HOURLY_PRICE", "3.52")
# Seconds a service may sit in Creating, Starting or Scaling with nothing changing (no status, no ready instance) and
# no reason from the cluster before its status says so, with what its workload is waiting on (deployments/reconcile.py).
SERVICE_PROGRESS_TIMEOUT_S = env.integer("SERVICE_PROGRESS_TIMEOUT_S", 900, minimum=1)
# GPUs an organization's services may hold in one region (at their maximum when they autoscale) where a platform admin
# set no GpuQuota for it; the platform's own (public) services are limited only by a GpuQuota row.
DEPLOY_DEFAULT_GPU_QUOTA = env.integer("DEPLOY_DEFAULT_GPU_QUOTA", 64, minimum=0)
# Longest a scaled-down local instance finishes its requests before it is stopped anyway.
SERVICE_DRAIN_GRACE_S = env.integer("SERVICE_DRAIN_GRACE_S", 300, minimum=0)
# The autoscaler (`manage.py autoscale`): seconds between its ticks (a wake request is acted on at once).
AUTOSCALE_TICK_S = env.decimal("AUTOSCALE_TICK_S", "5")
# Seconds a local engine simulator takes to "load its model" (the local driver's processes): /health answers 503 and
# requests are refused until then, as vLLM while it loads weights; a woken service waits this long for its instance.
LOCAL_ENGINE_STARTUP_S = env.decimal("LOCAL_ENGINE_STARTUP_S", "2")
if not LOCAL_ENGINE_STARTUP_S.is_finite() or LOCAL_ENGINE_STARTUP_S < 0:
    raise ImproperlyConfigured(f"LOCAL_ENGINE_STARTUP_S: must be a non-negative number, got {LOCAL_ENGINE_STARTUP_S}")
QUICKSTART_STEPS = ["seed_platform"]
CELERY_BEAT_SCHEDULE["deployments-reconcile-all"] = {"task": "deployments.reconcile_all", "schedule": 30.0}
CELERY_BEAT_SCHEDULE["deployments-check-clusters"] = {"task": "deployments.check_clusters", "schedule": 60.0}

# --- billing ---------------------------------------------------------------------------------------------------
# Hours an org may stay at or below zero spendable balance before its pay-as-you-go services are stopped.
BILLING_GRACE_HOURS = env.integer("BILLING_GRACE_HOURS", 24, minimum=0)
BILLING_LOW_BALANCE = env.decimal("BILLING_LOW_BALANCE", "10")  # the console warns below this spendable balance
BILLING_CHARGE_BATCH_SIZE = env.integer("BILLING_CHARGE_BATCH_SIZE", 2000, minimum=1)  # usage records per batch
# Credited once to the organization a user gets at sign-up (ledger key welcome:<org id>); 0: none.
BILLING_WELCOME_CREDIT = env.decimal("BILLING_WELCOME_CREDIT", "0")
if not BILLING_WELCOME_CREDIT.is_finite() or BILLING_WELCOME_CREDIT < 0:
    raise ImproperlyConfigured(f"BILLING_WELCOME_CREDIT: must be a non-negative amount, got {BILLING_WELCOME_CREDIT}")
# The deploy and scale pages warn when the balance covers fewer hours than this of the chosen service.
BILLING_DEPLOY_WARN_HOURS = env.integer("BILLING_DEPLOY_WARN_HOURS", 24, minimum=0)
# Who credits balances when card top-ups are off (an e-mail address or a URL, shown on the top-up page).
BILLING_CONTACT = env.string("BILLING_CONTACT", "")
BILLING_TOPUP_MIN = env.decimal("BILLING_TOPUP_MIN", "10")
BILLING_TOPUP_MAX = env.decimal("BILLING_TOPUP_MAX", "100000")
STRIPE_SECRET_KEY = env.string("STRIPE_SECRET_KEY", "")
STRIPE_PUBLISHABLE_KEY = env.string("STRIPE_PUBLISHABLE_KEY", "")
STRIPE_WEBHOOK_SECRET = env.string("STRIPE_WEBHOOK_SECRET", "")
STRIPE_API_BASE = env.string("STRIPE_API_BASE", "")  # empty: Stripe itself
STRIPE_JS_URL = env.string("STRIPE_JS_URL", "https://js.stripe.com/v3/")  # loaded only with a publishable key
STRIPE_WEBHOOK_TOLERANCE = env.integer("STRIPE_WEBHOOK_TOLERANCE", 300, minimum=1)  # seconds of clock skew
CELERY_BEAT_SCHEDULE["billing-charge-usage"] = {"task": "billing.tasks.charge_usage_task", "schedule": 10.0}
CELERY_BEAT_SCHEDULE["billing-settle-instances"] = {"task": "billing.tasks.settle_instances_task", "schedule": 300.0}
CELERY_BEAT_SCHEDULE["billing-renew-subscriptions"] = {
    "task": "billing.tasks.renew_subscriptions_task",
    "schedule": 300.0,
}
CELERY_BEAT_SCHEDULE["billing-stop-overdrawn"] = {"task": "billing.tasks.stop_overdrawn_task", "schedule": 300.0}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.string("LOG_LEVEL", "INFO")},
    # httpx (the plain upstream transport) would log every request to a replica at INFO.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

if not DEBUG and not EMBEDDED:
    SESSION_COOKIE_SECURE = env.boolean("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env.boolean("CSRF_COOKIE_SECURE", True)

# --- HTTP security headers -----------------------------------------------------------------------------------
# The console runs no inline script or style (behaviours are data attributes read by static/js/console.js), so the
# policy allows only this origin; a page that loads a third party (Stripe's card form) widens it for itself.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
# Behind a TLS-terminating proxy: the header it sets on HTTPS requests (e.g. X-Forwarded-Proto), HSTS, redirects.
_proxy_ssl_header = env.string("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header and not re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", _proxy_ssl_header):
    raise ImproperlyConfigured(
        f"SECURE_PROXY_SSL_HEADER: expected an HTTP header name such as X-Forwarded-Proto, got {_proxy_ssl_header!r}"
    )
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)
SECURE_SSL_REDIRECT = env.boolean("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env.integer("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.boolean("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env.boolean("SECURE_HSTS_PRELOAD", False)
