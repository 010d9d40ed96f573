"""Settings shared by every environment. Everything configurable comes from the environment
(django-environ); `.env.example` documents each variable.

Embedded defaults (nothing set): SQLite in ``var/keel.sqlite3``, a file-system cache and a file-system
Celery transport in ``var/`` so that ``make run`` needs nothing but Python. Setting ``DATABASE_URL`` and
``REDIS_URL`` switches to PostgreSQL and Redis with no code change.
"""

from datetime import timedelta

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from config.env import BASE_DIR, VAR_DIR, env

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-insecure-change-me")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",
    "django_structlog",
    "apps.common",
    "apps.audit",
    "apps.outbox",
    "apps.partners",
    "apps.oauth",
    "apps.live",
    "apps.employers",
    "apps.ledger",
    "apps.insurers",
    "apps.endorsements",
    "apps.reconciliation",
    "apps.loan_applications",
    "apps.ops",
    "apps.demo",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # The API edge (ADR 0015): request id on every response, problem+json for every API error, body
    # limits, then the JSON nesting guard — all before anything reads or parses a body.
    "apps.common.middleware.RequestIdMiddleware",
    "apps.common.middleware.ApiProblemMiddleware",
    # PostgreSQL unavailable in a non-DRF view → 503 + Retry-After (ADR 0026; DRF views: EXCEPTION_HANDLER).
    "apps.common.dependencies.DependencyUnavailableMiddleware",
    "apps.common.middleware.RequestSizeLimitMiddleware",
    "apps.common.middleware.JsonNestingGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.common.middleware.RequestLogMiddleware",  # django-structlog's, client faults at warning
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

# --- Database ---------------------------------------------------------------------------------------
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'keel.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the web process and the worker share the file without "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
else:
    # A connection pool per process (psycopg_pool): web requests and Celery tasks borrow a connection instead
    # of opening one — Celery's Django fix-up "closes" the connection around every task, which without a pool
    # costs a fresh PostgreSQL connect (~20 ms) per task.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN", default=1),
        "max_size": env.int("DATABASE_POOL_MAX", default=10),
        # Seconds a request waits for a pooled connection. Short on purpose: with PostgreSQL down the API
        # answers 503 + Retry-After (apps.common.dependencies) within 2 s instead of hanging (SPEC §12).
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=1.5),
        "max_idle": 300,
        # How long the pool keeps retrying (1 s, 2 s, 4 s … apart) to replace a connection PostgreSQL dropped
        # before it gives up and lets the next request start a fresh attempt. psycopg_pool's default (300 s)
        # doubles the wait up to minutes, so after a long outage the API kept answering 503 for up to ~40 s
        # after PostgreSQL was back (issue 10's newcomer trial); 10 s bounds that wait to a few seconds.
        "reconnect_timeout": env.float("DATABASE_POOL_RECONNECT_TIMEOUT", default=10.0),
    }
    # A pooled connection that died with a PostgreSQL restart is noticed when borrowed (the pool's `check`),
    # not handed to a request that then fails.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"]["OPTIONS"]["connect_timeout"] = env.int("DATABASE_CONNECT_TIMEOUT", default=2)
    # Server-side parameter binding, so psycopg prepares a statement after its 5th use on a connection and
    # PostgreSQL stops planning hot queries on every call (ADR 0013). Turn it off behind a transaction-mode
    # pooler that cannot keep prepared statements (e.g. PgBouncer < 1.21).
    if env.bool("DATABASE_SERVER_SIDE_BINDING", default=True):
        DATABASES["default"]["OPTIONS"]["server_side_binding"] = True
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = env.int("DATABASE_PREPARE_THRESHOLD", default=5)
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and broker -------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="keel"),
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    }
else:
    # A file cache is shared by the web process and the worker of `make run` (locmem would not be).
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's file-system transport, except that a message is renamed into place once written (config/broker.py).
    CELERY_BROKER_TRANSPORT = "config.broker:FilesystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(VAR_DIR / "broker" / "queue"),
        "data_folder_out": str(VAR_DIR / "broker" / "queue"),
        "control_folder": str(VAR_DIR / "broker" / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "control"):
        (VAR_DIR / "broker" / _folder).mkdir(parents=True, exist_ok=True)
else:
    # kombu's Redis transport, except that an ack through a torn-down connection is dropped instead of killing
    # the worker (config/broker.py, ADR 0024).
    if CELERY_BROKER_URL.startswith("redis://"):
        CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # A message a worker took but did not acknowledge comes back after this many seconds.
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600),
        "socket_connect_timeout": 2,
        "socket_timeout": 5,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        # Ping an idle broker connection before use, so one Redis restart is noticed at once.
        "health_check_interval": 10,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# A worker killed mid-task must not lose the message: acknowledge after the task ran.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_PREFETCH_MULTIPLIER", default=4)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Every queue a worker started without -Q consumes; outbox topics name one of these (production runs one
# worker pool per queue with -Q).
KEEL_QUEUES = (
    "default",
    "outbox",
    "endorsements",
    "insurers",
    "ledger",
    "scoring",
    "decisions",
    "webhooks",
    "reconciliation",
    "audit",
)
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in KEEL_QUEUES]
CELERY_TASK_CREATE_MISSING_QUEUES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Broker loss (ADR 0024): the worker reconnects for as long as it takes (the default gives up after 100
# tries and exits), and on connection loss cancels the late-ack tasks it can no longer acknowledge instead of
# acking or restoring them over a connection kombu has already torn down (celery/celery#9250,
# celery/kombu#970); the outbox lease re-publishes their rows, and the inbox absorbs a duplicate.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# Beat publishes through the same retrying producer; one Redis outage must not kill it either.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.5, "interval_step": 1, "interval_max": 2}
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
# Installed into django-celery-beat's tables at start-up; operators can edit them in the admin.
CELERY_BEAT_SCHEDULE = {
    "outbox-relay-safety-net": {"task": "outbox.relay", "schedule": 1.0, "options": {"queue": "outbox"}},
    "outbox-retention": {"task": "outbox.retention", "schedule": 3600.0, "options": {"queue": "outbox"}},
    "audit-seal": {"task": "audit.seal", "schedule": 10.0, "options": {"queue": "audit", "expires": 10}},
    "audit-verify": {"task": "audit.verify", "schedule": crontab(hour=21, minute=15), "options": {"queue": "audit"}},
    "idempotency-purge": {"task": "common.idempotency_purge", "schedule": 3600.0},
    "ledger-verify-nightly": {
        "task": "ledger.verify",
        "schedule": crontab(hour=21, minute=0),  # 02:30 IST
        "options": {"queue": "ledger"},
    },
    "webhooks-dispatch": {"task": "webhooks.dispatch", "schedule": 1.0, "options": {"queue": "webhooks", "expires": 5}},
    "webhooks-retention": {"task": "webhooks.retention", "schedule": 3600.0, "options": {"queue": "webhooks"}},
    "endorsement-scheduler-windows": {
        "task": "endorsements.schedule",
        "schedule": 1.0,
        "options": {"queue": "endorsements", "expires": 5},
    },
    "endorsement-activate-due": {
        "task": "endorsements.activate_due",
        "schedule": 900.0,
        "options": {"queue": "endorsements"},
    },
    "insurer-result-files-import": {
        "task": "insurers.import_result_files",
        "schedule": 2.0,
        "options": {"queue": "insurers", "expires": 10},
    },
    "sandbox-insurer-files": {
        "task": "insurers.sandbox_files",
        "schedule": 2.0,
        "options": {"queue": "insurers", "expires": 10},
    },
    "endorsement-rollup-compact": {
        "task": "endorsements.rollup_compact",
        "schedule": 30.0,
        "options": {"queue": "endorsements", "expires": 30},
    },
    "endorsement-hold-expiry-sweeper": {
        "task": "endorsements.expire_parked",
        "schedule": 3600.0,
        "options": {"queue": "endorsements"},
    },
    "reconciliation-nightly": {
        "task": "reconciliation.nightly",
        "schedule": crontab(hour=20, minute=30),  # 02:00 IST
        "options": {"queue": "reconciliation"},
    },
    # On `default`, not `reconciliation`: the worker whose runs it ends may be the one that stopped.
    "reconciliation-sweep-abandoned": {
        "task": "reconciliation.sweep_abandoned",
        "schedule": 60.0,
        "options": {"queue": "default"},
    },
    "reconciliation-history-purge": {
        "task": "reconciliation.history_purge",
        "schedule": crontab(hour=22, minute=0),
        "options": {"queue": "reconciliation"},
    },
}

# --- Outbox -----------------------------------------------------------------------------------------
OUTBOX = {
    "BATCH_SIZE": env.int("OUTBOX_BATCH_SIZE", default=500),
    # Seconds a claimed row stays invisible to other relays; the worker holding it renews the lease every
    # LEASE_SECONDS / 3 (ADR 0024), so a killed worker's rows are re-published within this many seconds.
    "LEASE_SECONDS": env.float("OUTBOX_LEASE_SECONDS", default=10),
    # A row a worker has received (prefetched) but not started keeps its lease at most this long.
    "HOLD_UNSTARTED_SECONDS": env.float("OUTBOX_HOLD_UNSTARTED_SECONDS", default=60),
    "MAX_ATTEMPTS": env.int("OUTBOX_MAX_ATTEMPTS", default=10),
    "BACKOFF_BASE_SECONDS": env.float("OUTBOX_BACKOFF_BASE_SECONDS", default=1.0),
    "BACKOFF_CAP_SECONDS": env.float("OUTBOX_BACKOFF_CAP_SECONDS", default=600.0),
    "RETENTION_HOURS": env.int("OUTBOX_RETENTION_HOURS", default=24),
    "RETENTION_BATCH": env.int("OUTBOX_RETENTION_BATCH", default=5000),
    "NUDGE_ON_COMMIT": env.bool("OUTBOX_NUDGE_ON_COMMIT", default=True),
    # Under backlog, up to this many rows of one queue travel in one Celery task.
    "PUBLISH_CHUNK": env.int("OUTBOX_PUBLISH_CHUNK", default=50),
    # A worker delivers the rows its consumer just wrote itself when it serves their consumers' queues, up to this
    # many steps in a row (ADR 0070: one relay hop and one queue wait fewer per step); 0: the relay publishes all.
    "CARRY_ON_MAX": env.int("OUTBOX_CARRY_ON_MAX", default=4),
}

# --- Operations (issue 14) ------------------------------------------------------------------------------
# Seconds between the /ops/ dashboard's self-refreshes, and how long an analytics answer is cached (ADR 0033).
OPS_REFRESH_SECONDS = env.float("OPS_REFRESH_SECONDS", default=5.0)
ANALYTICS_CACHE_SECONDS = env.int("ANALYTICS_CACHE_SECONDS", default=15)

# --- Partner webhooks and events (SPEC §10, ADR 0030) ---------------------------------------------------
WEBHOOKS = {
    "CONNECT_TIMEOUT_SECONDS": env.float("WEBHOOKS_CONNECT_TIMEOUT_SECONDS", default=3.0),
    "READ_TIMEOUT_SECONDS": env.float("WEBHOOKS_READ_TIMEOUT_SECONDS", default=10.0),
    "TOTAL_TIMEOUT_SECONDS": env.float("WEBHOOKS_TOTAL_TIMEOUT_SECONDS", default=15.0),
    "RESPONSE_MAX_BYTES": env.int("WEBHOOKS_RESPONSE_MAX_BYTES", default=65_536),
    # Retries: exponential backoff with jitter from BASE to CAP, for up to RETRY_WINDOW_HOURS (3 days).
    "BACKOFF_BASE_SECONDS": env.float("WEBHOOKS_BACKOFF_BASE_SECONDS", default=10.0),
    "BACKOFF_CAP_SECONDS": env.float("WEBHOOKS_BACKOFF_CAP_SECONDS", default=43_200.0),
    "RETRY_WINDOW_HOURS": env.float("WEBHOOKS_RETRY_WINDOW_HOURS", default=72.0),
    "RETENTION_DAYS": env.int("WEBHOOKS_RETENTION_DAYS", default=30),
    # An object's sequence counter goes once it has had no event this long (never less than RETENTION_DAYS);
    # a later event of it starts again at sequence 1 (ADR 0046).
    "SEQUENCE_RETENTION_DAYS": env.int("WEBHOOKS_SEQUENCE_RETENTION_DAYS", default=365),
    "ROTATION_OVERLAP_HOURS": env.float("WEBHOOKS_ROTATION_OVERLAP_HOURS", default=24.0),
    # Endpoints sent to at once by one dispatcher process (one thread each; one sender per endpoint).
    "DISPATCH_THREADS": env.int("WEBHOOKS_DISPATCH_THREADS", default=16),
    "DISPATCH_BATCH": env.int("WEBHOOKS_DISPATCH_BATCH", default=200),
    "ENDPOINT_LEASE_SECONDS": env.float("WEBHOOKS_ENDPOINT_LEASE_SECONDS", default=120.0),
    "NUDGE_ON_COMMIT": env.bool("WEBHOOKS_NUDGE_ON_COMMIT", default=True),
}
# http and loopback targets for a local receiver (`manage.py webhook_listen`): config.settings.local only.
WEBHOOKS_ALLOW_LOCAL_HTTP = False

# --- Endorsements ---------------------------------------------------------------------------------------
# The retry budget of one dispatch to an insurer (ADR 0025): calls that reached the insurer and failed
# (timeouts, 5xx, 429) count as attempts; calls our own breaker or rate limit held back count nothing. The
# endorsements are FAILED when either the attempts or the time since the first send are spent.
ENDORSEMENT_SEND_MAX_ATTEMPTS = env.int("ENDORSEMENT_SEND_MAX_ATTEMPTS", default=30)
ENDORSEMENT_SEND_MAX_HOURS = env.float("ENDORSEMENT_SEND_MAX_HOURS", default=6.0)
# Per-insurer circuit breaker and gateway (SPEC §8 defaults: 5 failures open it for 30 s). After the open
# time, HALF_OPEN_PROBES calls at a time go through; HALF_OPEN_SUCCESSES successes in a row close it.
INSURER_GATEWAY = {
    "CIRCUIT_FAIL_MAX": env.int("INSURER_CIRCUIT_FAIL_MAX", default=5),
    "CIRCUIT_RESET_SECONDS": env.float("INSURER_CIRCUIT_RESET_SECONDS", default=30.0),
    "HALF_OPEN_PROBES": env.int("INSURER_HALF_OPEN_PROBES", default=1),
    "HALF_OPEN_SUCCESSES": env.int("INSURER_HALF_OPEN_SUCCESSES", default=2),
    # File insurers (issue 11): quarantine a result manifest whose data file is still missing after this long;
    # record/warn about a repeated file-job condition (unreachable folder, bad configuration) once per period.
    "RESULT_FILE_GRACE_SECONDS": env.float("INSURER_RESULT_FILE_GRACE_SECONDS", default=600.0),
    "CONDITION_REPEAT_SECONDS": env.float("INSURER_FILE_CONDITION_REPEAT_SECONDS", default=3600.0),
}
# Debits parked for lack of funds longer than this fail (hold-expiry sweeper).
ENDORSEMENT_PARK_MAX_HOURS = env.int("ENDORSEMENT_PARK_MAX_HOURS", default=72)
# The port `make run` serves the web process on (config/Procfile), and the one place it is set (ADR 0019).
KEEL_PORT = env.int("KEEL_PORT", default=8000)
# Base URL of this deployment, used to register the built-in sandbox insurer (`seed_demo` repairs a stored
# one). Derived from KEEL_PORT unless set, so a first run on any port reaches its own sandbox.
KEEL_BASE_URL = env.str("KEEL_BASE_URL", default=f"http://127.0.0.1:{KEEL_PORT}")
# The built-in simulated insurer (/sandbox/…): on for development and tests, off in production unless asked.
SANDBOX_INSURER_ENABLED = env.bool("SANDBOX_INSURER_ENABLED", default=DEBUG)
# base64 of 32 random bytes; encrypts insurer credentials at rest (ADR 0029). DEBUG/test derive a dev key.
INSURER_CREDENTIALS_KEY = env.str("INSURER_CREDENTIALS_KEY", default="")
# base64 of 32 random bytes; encrypts partners' webhook signing secrets at rest (ADR 0042). DEBUG/test derive one.
# Rotation (ADR 0046): "NEW,OLD" — the first seals, every one opens; then `manage.py webhook_secrets_reseal`.
WEBHOOK_SECRETS_KEY = env.str("WEBHOOK_SECRETS_KEY", default="")
# base64 of 32 random bytes; encrypts insurers' callback signing secrets at rest (ADR 0044). DEBUG/test derive one.
INSURER_CALLBACK_SECRETS_KEY = env.str("INSURER_CALLBACK_SECRETS_KEY", default="")

# --- OAuth2 client credentials (docs/adr/0049-oauth-client-credentials-jwt.md) -------------------------------
# base64 of 32 random bytes; encrypts the ES256 signing keys at rest. DEBUG/test derive a dev key.
OAUTH_SIGNING_KEYS_KEY = env.str("OAUTH_SIGNING_KEYS_KEY", default="")
# `iss` and `aud` of every access token; a token whose `aud` is not OAUTH_AUDIENCE is refused.
OAUTH_ISSUER = env.str("OAUTH_ISSUER", default=KEEL_BASE_URL)
OAUTH_AUDIENCE = env.str("OAUTH_AUDIENCE", default=f"{KEEL_BASE_URL}/api/v1")
# Access-token lifetime (seconds); also how long a rotated-out key keeps verifying.
OAUTH_ACCESS_TOKEN_TTL_SECONDS = env.int("OAUTH_ACCESS_TOKEN_TTL_SECONDS", default=600)
# Clock skew tolerated on `exp`/`iat` (seconds).
OAUTH_CLOCK_LEEWAY_SECONDS = env.int("OAUTH_CLOCK_LEEWAY_SECONDS", default=30)

# --- Live event stream (docs/adr/0050-live-event-stream-under-asgi.md) --------------------------------------
# A comment line this often keeps proxies from closing an idle stream.
EVENT_STREAM_HEARTBEAT_SECONDS = env.float("EVENT_STREAM_HEARTBEAT_SECONDS", default=15.0)
# How often each process's reader looks for newly positioned events without a NOTIFY (SQLite: always).
EVENT_STREAM_POLL_SECONDS = env.float("EVENT_STREAM_POLL_SECONDS", default=0.25)
# With PostgreSQL LISTEN/NOTIFY the reader wakes on NOTIFY and polls only this often, as a safety net.
EVENT_STREAM_SAFETY_POLL_SECONDS = env.float("EVENT_STREAM_SAFETY_POLL_SECONDS", default=2.0)
# Events a stream may have unsent before it is closed (the client resumes from the table with Last-Event-ID).
EVENT_STREAM_QUEUE_SIZE = env.int("EVENT_STREAM_QUEUE_SIZE", default=1000)

# --- Loan applications: PAN protection (docs/adr/0009-pan-protection.md) ---------------------------------
# "1:<base64 of 32 bytes>,2:<…>" — every version that still encrypts a stored PAN must stay listed.
PAN_ENCRYPTION_KEYS = env.str("PAN_ENCRYPTION_KEYS", default="")
PAN_ACTIVE_KEY_VERSION = env.int("PAN_ACTIVE_KEY_VERSION", default=None)
PAN_BLIND_INDEX_KEY = env.str("PAN_BLIND_INDEX_KEY", default="")

# --- Web process (ASGI, ADR 0050, 0071) -------------------------------------------------------------------
# Threads per web process that run requests' middleware and views (the sync part of every request, one hop each);
# requests beyond them wait for a free one. Each holds a pooled database connection only while it serves.
WEB_REQUEST_THREADS = env.int("WEB_REQUEST_THREADS", default=8)
if WEB_REQUEST_THREADS < 1:
    raise ImproperlyConfigured(f"WEB_REQUEST_THREADS must be at least 1 (it is {WEB_REQUEST_THREADS})")

# --- Partner API --------------------------------------------------------------------------------------
API_DEFAULT_RATE_LIMITS = {
    "minute": env.int("API_RATE_LIMIT_PER_MINUTE", default=600),
    "hour": env.int("API_RATE_LIMIT_PER_HOUR", default=20_000),
    "day": env.int("API_RATE_LIMIT_PER_DAY", default=200_000),
}
API_RATE_LIMIT_WARNING_RATIO = 0.8
# How long a web process trusts the key / OAuth client it read (ADR 0054); clamped to 0..5 s, 0 turns it off.
API_PRINCIPAL_CACHE_SECONDS = env.float("API_PRINCIPAL_CACHE_SECONDS", default=5.0)
API_RATE_LIMIT_GRACE_RATIO = 1.1
API_RATE_LIMIT_GRACE_SECONDS = 300
IDEMPOTENCY_TTL = timedelta(hours=24)
# A request holding an Idempotency-Key longer than this is presumed dead and the key may be retried.
IDEMPOTENCY_LOCK_SECONDS = env.int("IDEMPOTENCY_LOCK_SECONDS", default=60)
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1_048_576)
API_MAX_UPLOAD_BYTES = env.int("API_MAX_UPLOAD_BYTES", default=20 * 1_048_576)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_UPLOAD_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1_048_576
API_MAX_LIST_LENGTH = 50_000
# Deepest JSON nesting a request body may have (Keel's deepest legitimate body has 4 levels); deeper → 400.
API_MAX_JSON_DEPTH = env.int("API_MAX_JSON_DEPTH", default=32)

REST_FRAMEWORK = {
    # Bearer first: it answers only `Authorization: Bearer …` and passes every other header to the API key.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.oauth.authentication.BearerTokenAuthentication",
        "apps.partners.authentication.ApiKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.partners.permissions.HasScope"],
    "DEFAULT_THROTTLE_CLASSES": [],
    "DEFAULT_RENDERER_CLASSES": ["apps.common.renderers.KeelJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "apps.common.parsers.GuardedJSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "apps.common.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    # Dependency outages (PostgreSQL down) → 503 + Retry-After; everything else → apps.common.errors.
    "EXCEPTION_HANDLER": "apps.common.dependencies.problem_or_unavailable_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Keel partner API",
    "DESCRIPTION": "Group-insurance endorsements and loan prequalification. Authenticate with "
    "`Authorization: Api-Key <key>`, or with an OAuth2 client-credentials access token from `POST /oauth/token` "
    "as `Authorization: Bearer <token>` (the same scopes and employers). Errors are RFC 9457 problem+json.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization"},
        }
    },
    "SECURITY": [{"ApiKeyAuth": []}, {"OAuth2": []}],
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files: the docs work offline, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation's problem+json responses (400/401/403/404/409/413/415/422/429/503), derived, not listed
    # per view (apps/common/openapi.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.live.schema.stream_operation_hook",
        "apps.common.openapi.problem_responses_hook",
    ],
    "ENUM_NAME_OVERRIDES": {
        "EmployerStatusEnum": "apps.employers.contracts.EmployerStatus",
        "CoverageStatusEnum": "apps.employers.contracts.CoverageStatus",
        "EndorsementStatusEnum": "apps.endorsements.contracts.EndorsementStatus",
        "PremiumDirectionEnum": "apps.endorsements.models.PremiumDirection",
        "EndorsementBatchStatusEnum": ["processing", "completed", "cancelled"],
        "LoanApplicationStatusEnum": "apps.loan_applications.models.LoanStatus",
        "LoanTypeEnum": "apps.loan_applications.models.LoanType",
        "LedgerTransactionKindEnum": "apps.ledger.models.TransactionKind",
        "LedgerEntryDirectionEnum": "apps.ledger.models.Direction",
    },
}

# --- Auth, i18n, static -------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "Asia/Kolkata"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="keel@localhost")

# --- Logging: one JSON object per line, request/correlation id on every line --------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("LOG_JSON", default=True)
DJANGO_STRUCTLOG_CELERY_ENABLED = True
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = True
# Safe to trust: `RequestIdMiddleware` runs first and replaces any X-Request-ID that is not a valid id, so the
# logs carry the id the client sees in its response (ADR 0015).
DJANGO_STRUCTLOG_TRUST_UPSTREAM_REQUEST_ID = True

from apps.common.logging import configure_structlog, logging_config  # noqa: E402

# Celery's and the task events' level: the Procfile's `--loglevel` variable, so one setting governs both.
LOGGING = logging_config(level=LOG_LEVEL, json=LOG_JSON, task_level=env.str("KEEL_WORKER_LOG_LEVEL", default=LOG_LEVEL))
configure_structlog(json=LOG_JSON)
