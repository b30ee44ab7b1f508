"""Django settings, built from :mod:`portal.config` (the only reader of the environment).

Without ``DATABASE_URL`` and ``REDIS_URL`` the portal runs embedded: SQLite under ``var/``,
an in-memory channel layer, a local-memory cache and eager Celery. With them it runs on
PostgreSQL (psycopg 3, pooled), Redis channels, a Redis cache and Celery on Redis.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
import structlog
from django.utils.csp import CSP

from portal.config import BASE_DIR, CONFIG, secure_var_dir

# Before anything writes under var/: umask 077, var/ 0700, older files there made 0600.
secure_var_dir(CONFIG.var_dir)

SECRET_KEY = CONFIG.secret_key
DEBUG = CONFIG.debug
ALLOWED_HOSTS = list(CONFIG.allowed_hosts)
VAR_DIR = CONFIG.var_dir

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "channels",
    "portal.accounts",
    "portal.audit",
    "tiers",
    "streaming",
]

MIDDLEWARE = [
    "portal.middleware.ClientAddressMiddleware",
    "portal.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "portal.accounts.middleware.MFARequiredMiddleware",
    "portal.middleware.AreaMiddleware",
    "portal.middleware.InvalidInputMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.accounts.context_processors.roles",
            ],
        },
    },
]

# --- data stores ---------------------------------------------------------------------------

if CONFIG.database_url:
    DATABASES = {"default": dj_database_url.parse(CONFIG.database_url, conn_max_age=0)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Fail fast (and closed) when the database is away, instead of queueing for 30 s.
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 20, "timeout": 5}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "portal.sqlite3",
            # WAL: readers (every request) never wait for a writer (audit, access records).
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20,
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
            "CONN_MAX_AGE": 600,
            # A file, not memory, so end-to-end tests can share it with a server process;
            # one per test run, so parallel runs on one machine never share it.
            "TEST": {"NAME": VAR_DIR / f"test-{os.getpid()}.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if CONFIG.redis_url:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CONFIG.redis_url,
            "KEY_PREFIX": "portal",
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, which cuts channels-redis'
            # blocking 5 s BZPOPMIN and tears live consumers down (django/channels_redis#422):
            # give reads more time than the pop blocks, still bounded for a dead Redis.
            "CONFIG": {"hosts": [{"address": CONFIG.redis_url, "socket_timeout": 15,
                                  "socket_connect_timeout": 5}], "prefix": "portal"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- Celery (read by portal/celery.py with namespace CELERY) -------------------------------

CELERY_BROKER_URL = CONFIG.redis_url or "memory://"
CELERY_RESULT_BACKEND = CONFIG.redis_url or None
CELERY_TASK_ALWAYS_EAGER = CONFIG.redis_url is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULE: dict[str, dict] = {}

# --- authentication ------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

OTP_TOTP_ISSUER = "ZT Portal"
OTP_TOTP_THROTTLE_FACTOR = 1
OTP_STATIC_THROTTLE_FACTOR = 1
# Wrong passwords: this many failures for one username or one client address inside the
# window lock further attempts, doubling the wait each time (see accounts/throttle.py).
PORTAL_LOGIN_FAILURE_LIMIT = 5
PORTAL_LOGIN_FAILURE_WINDOW = 15 * 60
PORTAL_BACKUP_CODE_COUNT = 10
INSTALLED_APPS += ["portal.passkeys"]  # passkeys (WebAuthn) as django-otp devices
PORTAL_PASSKEY_RP_ID: str | None = None  # WebAuthn RP ID; None: the host of PORTAL_URL, or as reached

# --- sessions, cookies and transport security ---------------------------------------------

# Sessions live in the database (revocation = deleting rows) and are read through the cache
# (Redis when configured): the proxy loads one on every request.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
SESSION_COOKIE_AGE = 12 * 3600
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
CSRF_FAILURE_VIEW = "portal.views.csrf_failure"
SECURE_SSL_REDIRECT = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Trusted only because ClientAddressMiddleware deletes the header when the peer is not in
# PORTAL_TRUSTED_PROXIES.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = 31536000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = False
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:", "blob:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
}
if CONFIG.apps_domain:
    # After a step-up the browser is redirected on to the app's own origin; Chromium applies
    # form-action to every redirect that follows a form post.
    SECURE_CSP["form-action"].append(f"https://*.{CONFIG.apps_domain}:*")
SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is an operator's decision (it is hard to undo), not a safe default.
    "security.W021",
]
PORTAL_TRUSTED_PROXIES = CONFIG.trusted_proxies
PORTAL_METRICS_NETWORKS = CONFIG.metrics_networks  # who may read /metrics
PORTAL_MAX_REQUEST_HEAD_BYTES = 64 * 1024  # request line + headers; more is answered 431 (portal/server.py)

# --- components the enforcement points use -------------------------------------------------

GUACD_HOST = CONFIG.guacd_host
GUACD_PORT = CONFIG.guacd_port
GUACD_TLS = CONFIG.guacd_tls  # guacd started with -C/-K; the portal verifies its certificate
GUACD_CA_FILE = CONFIG.guacd_ca_file  # CA bundle for that (None: the system's trust store)
PORTAL_RECORDINGS_DIR = CONFIG.recordings_dir

# --- static files, i18n --------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# Files Django writes (collectstatic into var/static included) stay private like the rest of
# var/: its storage would otherwise chmod each one 0644.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
STATICFILES_DIRS = [BASE_DIR / "static", ("vendor", BASE_DIR / "node_modules")]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- logging: structured, one JSON object a line -------------------------------------------

structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.format_exc_info,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    cache_logger_on_first_use=True,
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {
            "()": structlog.stdlib.ProcessorFormatter,
            "processor": structlog.processors.JSONRenderer(),
            "foreign_pre_chain": [
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
            ],
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One line per upstream request is the access record's job, not the log's.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

# --- desktop streaming ---------------------------------------------------------------------
INSTALLED_APPS += ["streaming.desktop"]
# Vault keys (Fernet, newest first). Empty: one key derived from SECRET_KEY. To rotate, put a
# new key first, run `manage.py vault rotate`, then drop the old one.
PORTAL_VAULT_KEYS: list[str] = list(CONFIG.vault_keys)  # PORTAL_VAULT_KEYS, comma-separated
PORTAL_DESKTOP_TICKET_SECONDS = 60  # one-time tunnel ticket lifetime
PORTAL_DESKTOP_REAUTH_MAX_SECONDS = 30  # re-decide at least this often, whatever the tier says
PORTAL_DESKTOP_STEP_UP_GRACE_SECONDS = 120  # input held this long for a fresh code, then the end
PORTAL_DESKTOP_WARN_SECONDS = 60  # warn this long before an idle or maximum-duration end
CELERY_BEAT_SCHEDULE.update({
    # A recording whose per-session digest task was lost (worker restart, broker outage).
    "desktop-sweep-recording-digests": {"task": "streaming.desktop.tasks.sweep_recording_digests",
                                        "schedule": 300.0, "options": {"expires": 240}},
})

# --- audit jobs ----------------------------------------------------------------------------
# Beat entries expire a little before the next run is due: a worker that was down does not
# wake up to a backlog of stale runs (each job catches up by itself: cursors, full walks).
CELERY_BEAT_SCHEDULE.update({
    "audit-verify-chain": {"task": "portal.audit.tasks.verify_audit_chain",
                           "schedule": 15 * 60.0, "options": {"expires": 14 * 60}},
    "audit-forward-to-siem": {"task": "portal.audit.tasks.forward_events_to_siem",
                              "schedule": 30.0, "options": {"expires": 25}},
    "audit-expire-grants": {"task": "tiers.tasks.expire_grants",
                            "schedule": 60.0, "options": {"expires": 55}},
    "audit-retention": {"task": "portal.audit.tasks.apply_retention_policy",
                        "schedule": 3600.0, "options": {"expires": 3000}},
})
PORTAL_SIEM_WEBHOOK_URL = CONFIG.siem_webhook_url  # POSTs OCSF events as JSON Lines
PORTAL_SIEM_WEBHOOK_TOKEN = CONFIG.siem_webhook_token  # sent as a bearer token, if set
PORTAL_SIEM_SYSLOG = CONFIG.siem_syslog  # udp://host:514 or tcp://host:514
PORTAL_SIEM_BATCH_SIZE = 500  # events per webhook POST
PORTAL_SIEM_MAX_BATCHES = 20  # per run: a run stays short, the next one carries on
PORTAL_SIEM_TIMEOUT_SECONDS = 10.0
PORTAL_AUDIT_PAGE_SIZE = 50
PORTAL_AUDIT_EXPORT_CHUNK_SIZE = 2000  # rows fetched per round trip while streaming an export

# --- identity-aware proxy ---
INSTALLED_APPS += ["streaming.proxy"]
# ES256 keys for X-Portal-Assertion: PEM files (0600) in a 0700 directory, outside git.
# Replicas share it (a mounted secret volume); `manage.py rotate_signing_key` rotates.
PORTAL_ASSERTION_KEYS_DIR = CONFIG.assertion_keys_dir
PORTAL_ASSERTION_LIFETIME = 120  # seconds; the code caps it at 300
PORTAL_ASSERTION_ISSUER: str | None = None  # None: the portal's origin (PORTAL_URL, or as reached)
# Host mode: each web app on its own origin https://<slug>.<PORTAL_APPS_DOMAIN> ("" = path mode,
# /apps/<slug>/ on the portal's origin in an opaque-origin sandbox; docs/decisions/0019).
PORTAL_APPS_DOMAIN = CONFIG.apps_domain
# The portal's own origin, where app origins send a browser to sign in (None: https://<first
# allowed host>:<the port the request came to>).
PORTAL_URL = CONFIG.portal_url
PORTAL_PROXY_CONNECT_TIMEOUT = 5.0
PORTAL_PROXY_READ_TIMEOUT = 60.0  # also the write timeout: a stalled upstream is cut off
PORTAL_PROXY_CA_FILE = CONFIG.proxy_ca_file  # CA bundle for https/wss upstreams (None: system trust store)
PORTAL_PROXY_MAX_CONNECTIONS = 100  # per upstream origin, kept alive between requests
PORTAL_PROXY_CHUNK_BYTES = 64 * 1024  # streaming unit both ways: memory per request is O(this)
PORTAL_PROXY_HOLD_MAX_BYTES = 256 * 1024  # largest form post kept across a step-up
PORTAL_PROXY_HOLD_SECONDS = 300  # how long a held form post waits for its step-up
PORTAL_PROXY_RATE_LIMIT_REDIS = CONFIG.redis_url  # token buckets in Redis; None = in memory
PORTAL_PROXY_WS_RECHECK_SECONDS = 30  # a proxied WebSocket is decided again this often
PORTAL_PROXY_WS_STALL_SECONDS = PORTAL_PROXY_READ_TIMEOUT  # a side that takes nothing this long: close
PORTAL_PROXY_WS_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
PORTAL_PROXY_WS_QUEUE = 8  # messages buffered each way (backpressure beyond, never a drop)
PORTAL_PROXY_CATALOG_CACHE_SECONDS = 5.0  # resource rows per process; changes are pushed to every process
# A session's user, groups, device and MFA time, kept per process after an allow; every change to
# them is pushed to every process (docs/decisions/0011), this only bounds a lost message. 0 = off.
PORTAL_PROXY_ADMISSION_CACHE_SECONDS = 5.0

# --- enterprise sign-in (OpenID Connect; docs/decisions/0021-oidc-sso.md) ---
INSTALLED_APPS += ["portal.sso"]
PORTAL_OIDC_PROVIDERS = CONFIG.oidc_providers  # PORTAL_OIDC_PROVIDERS: the IdPs the portal trusts

# --- the demo (demo/: seed_demo, demo_totp; no production package imports it) ---
INSTALLED_APPS += ["demo"]

# --- isolated sessions (session hosts and their disposable slots, docs/decisions/0023) ---
INSTALLED_APPS += ["streaming.isolation"]
PORTAL_SESSION_HOST_STALE_SECONDS = 10  # a host silent this long gets no new sessions
PORTAL_SESSION_HOST_SLOTS = 4  # `manage.py session_host` default
PORTAL_SESSION_SLOT_UID_BASE = 61000  # slot N of a host runs as this uid + N
PORTAL_SESSION_SLOTS_DIR = Path("/run/zt-portal/slots")  # outside var/: a slot's uid must reach it
PORTAL_SESSION_SLOT_MEMORY_MB = 2048
PORTAL_SESSION_PREWARM_BROWSER = True  # warm slots run the kiosk browser already (see session_host --help)
# Desktop images a per-session desktop may run (Resource -> IsolatedDesktop.image).
PORTAL_SESSION_IMAGES: dict[str, list[str]] = {
    "terminal": ["xterm", "-maximized", "-fa", "DejaVu Sans Mono", "-fs", "12", "-title", "Ops terminal"],
}
