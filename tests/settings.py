"""Settings for the test suite: edm.settings plus what only tests want."""

import base64
import os
import uuid

# Tests never need a real secret; production refuses to start without one.
os.environ.setdefault("SECRET_KEY", "tests-only-not-a-secret")
# Likewise a Fernet key for credentials at rest (32 bytes, url-safe base64), known to be a test key.
os.environ.setdefault("EDM_FIELD_KEYS", base64.urlsafe_b64encode(b"tests-only-field-key-not-secret!").decode())
# Scrapes in tests authenticate as Prometheus does (tests/metrics_auth.py); set
# in the environment so the schedulers and gunicorn started by tests have it too.
os.environ.setdefault("EDM_METRICS_TOKEN", "tests-metrics-token")
# Tests and the servers they start speak plain http, without the proxy that
# production has in front: no redirect to https, cookies sent over http.
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("SESSION_COOKIE_SECURE", "0")
os.environ.setdefault("CSRF_COOKIE_SECURE", "0")
# Throttle counters of one run (and its subprocesses) apart from other runs sharing the Redis database.
os.environ.setdefault("EDM_TEST_CACHE_PREFIX", f"edm-test-{uuid.uuid4().hex[:12]}")

from edm.settings import *  # noqa: F403
from edm.settings import BASE_DIR, CACHES, DATABASES, EDM_ALLOWED_BACKENDS

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so that subprocesses started by a test (a
    # scheduler, a management command) see the same database.
    # TEST_SQLITE_PATH lets two test runs on one checkout keep apart.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("TEST_SQLITE_PATH", str(BASE_DIR / "var" / "test_edm.sqlite3"))
    }

# The schema-driven API test calls the WSGI application as "localhost".
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

# Tests send through Django's in-memory backend as well; production's default list does not allow it.
EDM_ALLOWED_BACKENDS = [*EDM_ALLOWED_BACKENDS, "django.core.mail.backends.locmem.EmailBackend"]
CACHES["default"]["KEY_PREFIX"] = os.environ["EDM_TEST_CACHE_PREFIX"]
