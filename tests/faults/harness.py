"""Fault-drill harness (SPEC §12, issue 10): a private PostgreSQL and Redis, the real Procfile processes.

Nothing here touches the machine's shared services: PostgreSQL is a cluster of its own (`initdb`/`pg_ctl`,
run as the `postgres` user with `runuser` when the tests run as root) on a spare port, Redis a
`redis-server` of its own. Each drill gets a fresh database cloned from a migrated, seeded template and a
fresh Redis database number, then starts the processes exactly as `config/Procfile` declares them (web,
worker, beat, relay) as subprocesses, each in its own process group so a drill can `kill -9` one.

Ports come from the environment (defaults in the issue-10 range): FAULTS_PG_PORT, FAULTS_REDIS_PORT,
FAULTS_WEB_PORT.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_PORT = int(os.environ.get("FAULTS_PG_PORT", "25451"))
REDIS_PORT = int(os.environ.get("FAULTS_REDIS_PORT", "26451"))
WEB_PORT = int(os.environ.get("FAULTS_WEB_PORT", "8151"))
TEMPLATE_DB = "keel_faults_template"
ENDORSEMENT_TERMINAL = ("ACTIVE", "REJECTED", "FAILED", "CANCELLED", "CONFIRMED")
LOAN_TERMINAL = ("PRE_APPROVED", "REJECTED", "MANUAL_REVIEW")


def _drill_key(label: str) -> str:
    return base64.b64encode(hashlib.sha256(f"keel-fault-drill-only:{label}".encode()).digest()).decode()


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run a PostgreSQL server binary as `postgres` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"{name} not found: PostgreSQL server binaries are needed for the fault drills")


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on `port`, data under `base` (fsync off: drills, not durability)."""

    def __init__(self, base: Path, port: int) -> None:
        self.dir = base / "pgdata"
        self.port = port
        self.log = base / "postgres.log"

    def init(self) -> None:
        self.dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.dir.parent, "postgres", "postgres")
        subprocess.run(
            _as_postgres([_pg_bin("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres", "--no-sync"]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-o", options, "-w", "start"]),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.dir), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def running(self) -> bool:
        status = subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.dir), "status"]), capture_output=True)
        return status.returncode == 0

    def ensure_started(self) -> None:
        """Start the cluster again if a drill that stopped it failed before healing it (no cascade)."""
        if not self.running():
            self.start()

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def execute(self, sql: str, db: str = "postgres") -> None:
        with psycopg.connect(self.url(db), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


class PrivateRedis:
    def __init__(self, base: Path, port: int) -> None:
        self.port = port
        self.base = base
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.base), "--logfile", str(self.base / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def ensure_started(self) -> None:
        """Start Redis again if a drill that stopped it failed before healing it (no cascade)."""
        if self.process is None:
            self.start()


def procfile() -> dict[str, str]:
    """The process commands of `config/Procfile`, parsed by honcho (what `make run` starts)."""
    from honcho.environ import parse_procfile

    processes = dict(parse_procfile((ROOT / "config" / "Procfile").read_text()).processes)
    processes.pop("key", None)  # prints the demo key under `make run`; nothing to drill
    return processes


@dataclass
class Cluster:
    """The drill's services: one private PostgreSQL cluster and Redis for the whole session."""

    base: Path
    pg: PrivatePostgres
    redis: PrivateRedis
    seed_output: str = ""
    redis_db: int = 0

    def env(self, db: str, redis_db: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "TEST_"))}
        env.update(
            PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
            DJANGO_SETTINGS_MODULE="config.settings.local",
            DJANGO_DEBUG="false",
            DATABASE_URL=self.pg.url(db),
            REDIS_URL=f"redis://127.0.0.1:{self.redis.port}/{redis_db}",
            CELERY_BROKER_URL=f"redis://127.0.0.1:{self.redis.port}/{redis_db}",
            KEEL_PORT=str(WEB_PORT),
            KEEL_BASE_URL=f"http://127.0.0.1:{WEB_PORT}",
            SANDBOX_INSURER_ENABLED="true",
            PAN_ENCRYPTION_KEYS=f"1:{_drill_key('pan-1')}",
            PAN_ACTIVE_KEY_VERSION="1",
            PAN_BLIND_INDEX_KEY=_drill_key("blind-index"),
            # DEBUG is off: every secret box needs its key, as in production (ADR 0042, 0044, 0049).
            WEBHOOK_SECRETS_KEY=_drill_key("webhook-secrets"),
            INSURER_CALLBACK_SECRETS_KEY=_drill_key("insurer-callback-secrets"),
            OAUTH_SIGNING_KEYS_KEY=_drill_key("oauth-signing-keys"),
            LOG_LEVEL="INFO",
            # Short breaker settings so a drill sees several open → half-open → closed cycles.
            INSURER_CIRCUIT_FAIL_MAX="5",
            INSURER_CIRCUIT_RESET_SECONDS="3",
            # Retry quickly: the drills measure recovery, not the production backoff cap.
            OUTBOX_BACKOFF_CAP_SECONDS="5",
            # make check's deploy settings are not used here; the drills run the `make run` settings.
            DJANGO_SECRET_KEY="fault-drill-secret-" + "x" * 40,
            CACHE_KEY_PREFIX=f"drill{redis_db}",
        )
        env.pop("CELERY_BROKER_TRANSPORT", None)
        return env

    def manage(self, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    base = Path(tempfile.mkdtemp(prefix="keel-faults-"))
    os.chmod(base, 0o755)
    pg = PrivatePostgres(base, PG_PORT)
    redis = PrivateRedis(base, REDIS_PORT)
    pg.init()
    pg.start()
    redis.start()
    c = Cluster(base=base, pg=pg, redis=redis)
    try:
        pg.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        env = c.env(TEMPLATE_DB, 0)
        scopes = [
            arg
            for area in ("endorsements", "loans", "ledger", "employers")
            for arg in ("--scope", f"{area}:read", "--scope", f"{area}:write")
        ]
        # seed_demo prints no key (issue 14: the demo key is random and printed by `make run`); the drills
        # issue their own with apikey_create, which prints the key alone on its last line (SPEC §2).
        key_args = ("apikey_create", "--partner", "demo-partner", *scopes, "--all-employers")
        for args in (("migrate", "--noinput", "-v0"), ("seed_demo",), key_args):
            result = c.manage(env, *args)
            if result.returncode != 0:
                raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
            c.seed_output = result.stdout
        yield c
    finally:
        redis.stop()
        pg.stop("immediate")
        if not os.environ.get("FAULTS_KEEP"):
            shutil.rmtree(base, ignore_errors=True)


@dataclass
class Proc:
    name: str
    command: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Drill:
    """One drill's world: its own database (a clone of the seeded template), Redis db and processes."""

    cluster: Cluster
    name: str
    db: str
    redis_db: int
    env: dict[str, str]
    api_key: str
    procs: dict[str, Proc] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    # --- processes -------------------------------------------------------------------------------------
    def start(self, name: str) -> None:
        proc = self.procs[name]
        handle = proc.log.open("ab")
        proc.process = subprocess.Popen(
            ["bash", "-c", f"exec {proc.command}"],
            cwd=ROOT,
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_all(self) -> None:
        import socket

        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", WEB_PORT)) == 0:
                raise RuntimeError(f"port {WEB_PORT} is taken: a web process of an earlier run is still alive")
        for name in self.procs:
            self.start(name)
        self.wait_http("/health", timeout=60)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        assert proc.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.process.pid, sig)
        proc.process.wait(30)

    def restart(self, name: str) -> None:
        """What a supervisor does (`restart: unless-stopped`, `make run`): start the dead process again."""
        self.procs[name].restarts += 1
        self.start(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.alive:
                assert proc.process is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.process.pid, signal.SIGTERM)
        for proc in self.procs.values():
            if proc.process is not None:
                try:
                    proc.process.wait(15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.process.pid, signal.SIGKILL)
                    proc.process.wait(5)
        # Children a process group leader left behind (none expected: each process is its own group).
        for proc in self.procs.values():
            if proc.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.process.pid, signal.SIGKILL)

    def dead_processes(self) -> list[str]:
        return [p.name for p in self.procs.values() if not p.alive]

    def logs(self, name: str, tail: int = 60) -> str:
        lines = self.procs[name].log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    # --- HTTP --------------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{WEB_PORT}"

    def http(self, method: str, path: str, *, timeout: float = 10, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Api-Key {self.api_key}", **kwargs.pop("headers", {})}
        return requests.request(method, self.base_url + path, headers=headers, timeout=timeout, **kwargs)

    def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.base_url + path, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"{path} did not answer 200 within {timeout}s:\n{self.logs('web')}")

    # --- database ---------------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.cluster.pg.url(self.db), autocommit=True, connect_timeout=3) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.query(sql, params)[0][0]


def make_drill(c: Cluster, name: str, redis_db: int) -> Drill:
    db = f"drill_{name}_{uuid.uuid4().hex[:6]}"
    c.pg.execute(f"CREATE DATABASE {db} TEMPLATE {TEMPLATE_DB}")
    env = c.env(db, redis_db)
    api_key = c.seed_output.strip().splitlines()[-1].strip()
    drill = Drill(cluster=c, name=name, db=db, redis_db=redis_db, env=env, api_key=api_key)
    for proc_name, command in procfile().items():
        drill.procs[proc_name] = Proc(proc_name, command, c.base / f"{name}-{proc_name}.log")
    return drill


# --- workload ------------------------------------------------------------------------------------------


def pan_for(n: int) -> str:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return f"DR{letters[n // 676 % 26]}{letters[n // 26 % 26]}{letters[n % 26]}{(n % 9999) + 1:04d}{letters[n % 26]}"


def loan_payload(n: int) -> dict[str, Any]:
    return {
        "pan_number": pan_for(n),
        "first_name": "Drill",
        "last_name": "Applicant",
        "date_of_birth": "1988-03-14",
        "email": f"drill{n}@example.in",
        "phone_number": "9876543210",
        "monthly_income": ("90000.00", "50000.00", "20000.00")[n % 3],
        "requested_amount": ("500000.00", "300000.00", "200000.00")[n % 3],
        "loan_type": ("PERSONAL", "HOME", "AUTO")[n % 3],
        "consent": True,
    }


def addition_row(code: str, effective: str) -> dict[str, Any]:
    return {
        "type": "addition",
        "effective_date": effective,
        "employee": {
            "employee_code": code,
            "first_name": "Drill",
            "last_name": "Member",
            "date_of_birth": "1990-05-17",
            "gender": "female",
            "email": f"{code.lower()}@example.com",
        },
    }


def policies(drill: Drill) -> list[tuple[int, int]]:
    """(employer id, policy id) of the seeded REST-sandbox policies (read once: later calls may come while
    the drill's PostgreSQL is down)."""
    if "policies" not in drill.cache:
        drill.cache["policies"] = _policies(drill)
    return list(drill.cache["policies"])


def today(drill: Drill) -> str:
    if "today" not in drill.cache:
        drill.cache["today"] = drill.scalar("SELECT (now() AT TIME ZONE 'Asia/Kolkata')::date").isoformat()
    return str(drill.cache["today"])


def _policies(drill: Drill) -> list[tuple[int, int]]:
    return [
        (int(e), int(p))
        for e, p in drill.query(
            "SELECT p.employer_id, p.id FROM employers_policy p JOIN employers_insurer i ON i.id = p.insurer_id "
            "WHERE i.code = 'sandbox-rest' ORDER BY p.id"
        )
    ]


RETRY_FOR_S = 180.0


def _retry_later(response: requests.Response) -> bool:
    """An answer that asks the client to send the same request again later: 503 (a dependency down, nothing
    changed), or 409 `idempotency-key-in-progress` (the first send of this key is still being processed, or was
    cut off by the fault and its claim has not expired yet)."""
    if response.status_code == 503:
        return True
    return (
        response.status_code == 409
        and response.headers.get("Content-Type", "").startswith("application/problem+json")
        and response.json().get("type", "").endswith("/idempotency-key-in-progress")
    )


def post_as_a_client_would(drill: Drill, path: str, body: dict[str, Any], *, timeout: float = 10) -> requests.Response:
    """POST `body` with one Idempotency-Key, and while the API answers 503 (a dependency down: nothing was
    changed), 409 for the same key still in progress (`_retry_later`), or cannot be reached, wait (`Retry-After`,
    else 0.5 s) and send the same request again, for up to RETRY_FOR_S seconds — what the SPEC asks of a partner.
    The drills submit through their faults, so a fault that turns a submission away must delay it, not drop it
    (CI, 2026-12-02: the PostgreSQL drill's loans stopped at the first 503 and 30 applications were never sent)."""
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            response = drill.http("POST", path, json=body, headers=headers, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout):  # the same key: a second send cannot double it
            response = None
        if response is not None and not _retry_later(response):
            return response
        if time.monotonic() > deadline:
            raise AssertionError(
                f"POST {path} still refused after {RETRY_FOR_S:.0f} s: "
                f"{response.text if response is not None else 'no connection'}"
            )
        wait = response.headers.get("Retry-After", "") if response is not None else ""
        time.sleep(min(float(wait), 5.0) if wait.isdigit() else 0.5)


def submit_endorsements(drill: Drill, count: int, *, prefix: str) -> int:
    """`count` additions as JSON batches spread over the seeded policies; returns how many were accepted."""
    targets = policies(drill)
    per = -(-count // len(targets))
    accepted = 0
    for index, (employer, policy) in enumerate(targets):
        n = min(per, count - accepted)
        if n <= 0:
            break
        rows = [addition_row(f"{prefix}-{index}-{i}", today(drill)) for i in range(n)]
        body = {"employer": employer, "policy": policy, "rows": rows}
        response = post_as_a_client_would(drill, "/api/v1/endorsement-batches", body, timeout=60)
        assert response.status_code == 202, response.text
        accepted += n
    return accepted


def submit_single_endorsement(drill: Drill, code: str) -> requests.Response:
    employer, policy = policies(drill)[0]
    body = {"employer": employer, "policy": policy, **addition_row(code, today(drill))}
    return drill.http("POST", "/api/v1/endorsements", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})


def submit_loans(drill: Drill, count: int, *, start: int) -> int:
    for n in range(start, start + count):
        response = post_as_a_client_would(drill, "/api/v1/loan-applications", loan_payload(n))
        assert response.status_code in (201, 202), response.text
    return count


@dataclass(frozen=True)
class Progress:
    endorsements: int
    endorsements_terminal: int
    endorsements_active: int
    loans: int
    loans_terminal: int

    @property
    def all_terminal(self) -> bool:
        return self.endorsements_terminal == self.endorsements and self.loans_terminal == self.loans

    @property
    def done(self) -> int:
        return self.endorsements_terminal + self.loans_terminal


def progress(drill: Drill) -> Progress:
    e_total, e_term, e_active = drill.query(
        "SELECT count(*), count(*) FILTER (WHERE status = ANY(%s)), count(*) FILTER (WHERE status = 'ACTIVE') "
        "FROM endorsements_endorsement",
        (list(ENDORSEMENT_TERMINAL),),
    )[0]
    l_total, l_term = drill.query(
        "SELECT count(*), count(*) FILTER (WHERE status = ANY(%s)) FROM loan_applications_loanapplication",
        (list(LOAN_TERMINAL),),
    )[0]
    return Progress(int(e_total), int(e_term), int(e_active), int(l_total), int(l_term))


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> float:
    """Poll until `check()`; returns the seconds it took. Raises AssertionError after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(psycopg.OperationalError):
            if check():
                return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout}s")


@dataclass
class Verdict:
    drill: str
    resumed_s: float
    all_terminal_s: float
    lost: int
    doubled: int
    endorsements: int
    loans: int
    dead_rows: int
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.notes.items())
        return (
            f"drill={self.drill} endorsements={self.endorsements} loans={self.loans} "
            f"resumed_after_recovery_s={self.resumed_s:.1f} all_terminal_after_recovery_s={self.all_terminal_s:.1f} "
            f"lost={self.lost} doubled={self.doubled} dead_rows={self.dead_rows} {extra}"
        ).strip()


def measure_recovery(drill: Drill, *, recovered_at: float, timeout: float) -> tuple[float, float]:
    """From the moment of recovery: seconds until work visibly resumed (one more item terminal, or all
    already terminal) and until everything is terminal."""
    before = progress(drill).done
    resumed: float | None = None
    while time.monotonic() - recovered_at < timeout:
        try:
            now = progress(drill)
        except psycopg.OperationalError:
            time.sleep(0.25)
            continue
        if resumed is None and (now.done > before or now.all_terminal):
            resumed = time.monotonic() - recovered_at
        if now.all_terminal:
            return resumed or 0.0, time.monotonic() - recovered_at
        time.sleep(0.25)
    raise AssertionError(f"{drill.name}: not all terminal {timeout}s after recovery: {progress(drill)}")


def verify(drill: Drill, *, resumed_s: float, all_terminal_s: float, expected_endorsements: int) -> Verdict:
    """The drill's invariants, measured on its own database: nothing lost, nothing doubled, books verify."""
    p = progress(drill)
    applied_twice = drill.scalar(
        "SELECT count(*) FROM (SELECT idempotency_key FROM insurers_sandboxapplied "
        "GROUP BY idempotency_key HAVING count(*) > 1) d"
    )
    active_without_one_application = drill.scalar(
        "SELECT count(*) FROM endorsements_endorsement e WHERE e.status = 'ACTIVE' AND "
        "(SELECT count(*) FROM insurers_sandboxapplied a WHERE a.idempotency_key = e.idempotency_key) <> 1"
    )
    double_captures = drill.scalar(
        "SELECT count(*) FROM (SELECT employee_code, policy_id FROM endorsements_endorsement "
        "WHERE status = 'ACTIVE' GROUP BY employee_code, policy_id HAVING count(*) > 1) d"
    )
    dead = drill.scalar("SELECT count(*) FROM outbox_outboxmessage WHERE status = 'dead'")
    lost = (expected_endorsements - p.endorsements) + (p.endorsements - p.endorsements_active)
    lost += p.loans - p.loans_terminal
    for command in ("ledger_verify", "audit_verify"):
        result = drill.cluster.manage(drill.env, command, timeout=120)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return Verdict(
        drill=drill.name,
        resumed_s=resumed_s,
        all_terminal_s=all_terminal_s,
        lost=int(lost),
        doubled=int(applied_twice) + int(double_captures) + int(active_without_one_application),
        endorsements=p.endorsements,
        loans=p.loans,
        dead_rows=int(dead),
    )


def shell_join(args: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)
