"""Settings for the EDM sending queue scheduler, all read from the environment.

See README.md ("Configuration") for every variable. Nothing here talks to a
database or a broker at import time. Every problem with the environment raises
``edm.env.EnvError`` here, at import, so that each process stops at start with
one line (``edm.startup``) and not at its first request, task or log line.
"""

from __future__ import annotations

from pathlib import Path

from edm.env import (
    EnvError,
    env_backend_list,
    env_basic_auth_list,
    env_bool,
    env_broker_url,
    env_choice,
    env_database,
    env_email,
    env_fernet_keys,
    env_int,
    env_list,
    env_proxy_ssl_header,
    env_public_url,
    env_rate,
    env_redis_url,
    env_required,
    env_str,
    env_timezone,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

DEBUG = env_bool("DEBUG", False)
if DEBUG:
    SECRET_KEY = env_str("SECRET_KEY", "insecure-debug-only-key-never-use-in-production")
else:
    SECRET_KEY = env_required("SECRET_KEY", why="it signs sessions and tokens (it may be omitted only with DEBUG=1)")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS behind a TLS-terminating proxy (README "Deployment behind a TLS-terminating proxy") ---

# Production defaults are the safe ones; with DEBUG (plain http on a laptop) they are off.
# The proxy must set this header itself, overwriting what a client sent: Django
# takes a request carrying X-Forwarded-Proto: https for a secure one.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("EDM_PROXY_SSL_HEADER", None if DEBUG else "HTTP_X_FORWARDED_PROTO")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Reached over plain http inside the compose network: the containers' health
# checks and Prometheus. A redirect to https would fail them (no TLS there).
SECURE_REDIRECT_EXEMPT = [r"^api/monitoring/system-health$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)

# --- Prometheus metrics credentials (common/metrics_auth.py) ----------

# A bearer token and/or basic auth; without either the metrics are open only with DEBUG.
EDM_METRICS_TOKEN = env_str("EDM_METRICS_TOKEN")
EDM_METRICS_USER = env_str("EDM_METRICS_USER")
EDM_METRICS_PASSWORD = env_str("EDM_METRICS_PASSWORD")
if bool(EDM_METRICS_USER) != bool(EDM_METRICS_PASSWORD):
    raise EnvError("EDM_METRICS_USER and EDM_METRICS_PASSWORD must be set together (basic auth)")

INSTALLED_APPS = [
    "edm.apps.EdmAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_celery_beat",
    "django_prometheus",
    "anymail",
    "common",
    "accounts",
    "config",
    "contacts",
    "queues",
    "deliverability",
    "monitoring",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves collectstatic's output (admin, dashboard, API docs) from gunicorn itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Stored credentials the keys cannot decrypt: a clear 503 on any page.
    "common.middleware.FieldKeyErrorMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "edm.urls"
WSGI_APPLICATION = "edm.wsgi.application"
AUTH_USER_MODEL = "accounts.User"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------

DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'edm.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    if not Path(_db["NAME"]).is_absolute():
        _db["NAME"] = str(BASE_DIR / _db["NAME"])
    try:
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EnvError(
            f"DATABASE_URL: cannot create the SQLite file's directory {str(Path(_db['NAME']).parent)!r} "
            f"({error.strerror})"
        ) from None
    _db["OPTIONS"] = {
        # IMMEDIATE makes every atomic() block take the write lock up front, so
        # read-then-write sequences (claims, tag edits) serialise instead of
        # failing with "database is locked" half-way through.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env_bool("DB_POOL", True):
    # psycopg 3's pool through Django's native support: the plan's sizing
    # (max 20, min 5, 30 s to acquire, idle connections closed after 10 s).
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 5, minimum=0),
        "max_size": env_int("DB_POOL_MAX_SIZE", 20, minimum=1),
        "timeout": env_int("DB_POOL_TIMEOUT", 30, minimum=1),
        "max_idle": env_int("DB_POOL_MAX_IDLE", 10, minimum=1),
    }
    _pool = _db["OPTIONS"]["pool"]
    if _pool["min_size"] > _pool["max_size"]:
        # psycopg_pool would refuse it only at the first query.
        raise EnvError(
            f"DB_POOL_MIN_SIZE={_pool['min_size']} is above DB_POOL_MAX_SIZE={_pool['max_size']} "
            "(the pool keeps min_size connections open and never opens more than max_size)"
        )
    _db["CONN_MAX_AGE"] = 0  # Django refuses persistent connections together with a pool.
    # With a pool this makes Django check each connection as it leaves the
    # pool: after a database restart the pool's old connections are dead, and
    # a process must get a working one, not each dead one in turn.
    _db["CONN_HEALTH_CHECKS"] = True
else:
    _db["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 60, minimum=0)
    _db["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and Celery -----------------------------------------------------

REDIS_URL = env_redis_url("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "edm"}}

CELERY_BROKER_URL = env_broker_url("CELERY_BROKER_URL", REDIS_URL)
# Without a broker every .delay() runs in the calling process, so a single
# machine with no Redis still works end to end.
CELERY_TASK_ALWAYS_EAGER = CELERY_BROKER_URL is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"

# --- Auth, i18n, static ---------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_timezone("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "common.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "common.api.filters.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    # JSON bodies are size-limited and depth-checked (DRF reads them from the
    # stream, past DATA_UPLOAD_MAX_MEMORY_SIZE); forms for the browsable API.
    "DEFAULT_PARSER_CLASSES": [
        "common.api.parsers.LimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "common.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    # Counted in the default cache: Redis (shared by every process) when REDIS_URL is set.
    "DEFAULT_THROTTLE_CLASSES": [
        "common.api.throttles.AnonRateThrottle",
        "common.api.throttles.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_rate("EDM_THROTTLE_ANON", "600/min"),
        "user": env_rate("EDM_THROTTLE_USER", "6000/min"),
        # Failed logins per client address and username at /api/auth/token/ (common.api.throttles).
        "login": env_rate("EDM_THROTTLE_LOGIN", "10/min"),
    },
    # Proxies in front of gunicorn that append to X-Forwarded-For: the client is
    # the address that many hops back. 0 trusts no header (a client could forge it).
    "NUM_PROXIES": env_int("EDM_NUM_PROXIES", 0, minimum=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "EDM queue scheduler API",
    "DESCRIPTION": "Mail tasks, contacts and tags for users; services, configuration, alerts and monitoring for staff.",
    "VERSION": "2.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema describes the API, it holds no data: integrators fetch it before they have a token.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # The docs pages' scripts are served from our own static files, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # ReDoc would name web fonts its page must fetch from Google: the system's fonts instead
    # (templates/api/redoc.html drops the font links).
    "REDOC_UI_SETTINGS": {
        "theme": {
            "typography": {
                "fontFamily": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
                "headings": {"fontFamily": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"},
                "code": {"fontFamily": "ui-monospace, 'DejaVu Sans Mono', monospace"},
            }
        },
    },
    "COMPONENT_SPLIT_REQUEST": True,
}

# A request body above this size is refused (Django answers 400 before any view runs).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, minimum=0)

# --- Mail -----------------------------------------------------------------

# Message-IDs are generated once per subtask with this domain, so every
# attempt of a subtask carries the same ID whichever service sends it.
EDM_MESSAGE_ID_DOMAIN = env_str("EDM_MESSAGE_ID_DOMAIN", "edm.localhost")
# Where recipients reach this site: campaign mail's unsubscribe links start with it.
EDM_PUBLIC_URL = env_public_url("EDM_PUBLIC_URL", "http://127.0.0.1:8000")
# Optional: a mailbox offered as a second List-Unsubscribe method (its mail is not read by this project).
EDM_UNSUBSCRIBE_MAILTO = env_email("EDM_UNSUBSCRIBE_MAILTO")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "edm@localhost")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
# Staff alert mails (alerts.notify_staff) must never hang the process that sends them.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)

# --- Service credentials and backends (see README "Security") -----------

# Fernet keys that encrypt EmailService.password and backend_options in the
# database: the first encrypts, every one decrypts (manage.py rotate_field_keys).
# Only with DEBUG=1 may it be left unset: a key is then derived from SECRET_KEY.
EDM_FIELD_KEYS = env_fernet_keys("EDM_FIELD_KEYS", debug_secret=SECRET_KEY if DEBUG else None)
# The Django e-mail backends a service's backend_path may name; "package.*"
# allows every backend under that package (django-anymail's ESPs).
EDM_ALLOWED_BACKENDS = env_backend_list(
    "EDM_ALLOWED_BACKENDS", ["django.core.mail.backends.smtp.EmailBackend", "anymail.backends.*"]
)

# --- ESP tracking webhooks (django-anymail; see README "ESP webhooks") ----

# Without a webhook secret every ESP webhook is refused (deliverability.webhook_urls).
# ESPs that sign their posts also need their own key (their webhook is refused without it);
# the others rely on the secret alone. MANDRILL_WEBHOOK_URL: the public URL Mandrill signs,
# when a proxy changes the one Django sees.
_ANYMAIL_ESP_KEYS = (
    "MAILGUN_WEBHOOK_SIGNING_KEY",
    "MAILERSEND_SIGNING_SECRET",
    "MANDRILL_WEBHOOK_KEY",
    "MANDRILL_WEBHOOK_URL",
)
ANYMAIL = {name: value for name in _ANYMAIL_ESP_KEYS if (value := env_str(name))}
_webhook_secrets = env_basic_auth_list("ANYMAIL_WEBHOOK_SECRET")
if _webhook_secrets:
    ANYMAIL["WEBHOOK_SECRET"] = _webhook_secrets

# --- Checks and logging ---------------------------------------------------

SILENCED_SYSTEM_CHECKS = [
    # Index names follow the original plan's SQL (up to 41 characters); the
    # 30-character limit this check enforces exists for Oracle, which this
    # project does not support. PostgreSQL allows 63, SQLite has no limit.
    "models.E034",
]

# Checked here: logging's own check comes only at django.setup(), as a traceback.
LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ["text", "json"])
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "edm.logging.KeyValueFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "edm.logging.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # aiosmtpd (the demo and test sink) logs every SMTP command at INFO.
        "mail.log": {"level": "WARNING"},
    },
}
