"""Keel's Redis broker transport: kombu's, except that an ack for a message of a torn-down connection is dropped.

Why (ADR 0024, issue 10). With late acknowledgement the worker acknowledges a message after its task ran; with
the threads pool that acknowledgement is queued onto the consumer's event loop (`Consumer.call_soon_ack`).
When Redis goes away while tasks run, the consumer collects and closes the broken connection
(`Consumer.on_connection_error_after_connected`: `Connection.collect()` sets the transport's `client` to
`None` and closes the channels, dropping their connection pools) and reconnects. A task that finishes after
that queues the ack of its message, which still belongs to the **old** channel; kombu's Redis channel then
builds a new connection pool from the dead connection's parameters and raises
`AttributeError: 'NoneType' object has no attribute 'hostname'` (or `'client'`) from `Channel._connparams`.
That is not a connection error, so Celery does not log it as "Couldn't ack": it escapes the event loop and
the worker exits with "Unrecoverable error" — the crash of issue 10, seen again in CI on 2026-12-01. Upstream:
the same teardown-order failure is celery/kombu#582 (`hostname` on a closed channel) and the
connection-loss family of celery/celery#9250 (open; the `fileno` variant is fixed by celery/celery#10318);
no kombu release guards the ack path.

What we do. Acknowledging or rejecting through a channel whose connection is gone is dropped with a warning.
Nothing is lost and nothing runs twice: kombu restored the channel's unacknowledged messages when it closed
it (`QoS.restore_unacked_once`), or they sit in the unacked index until the visibility timeout brings them
back; the redelivered message finds its outbox row done (or re-leased) and its consumer's inbox row, so it
is a no-op (ADR 0008, ADR 0024). Everything else is kombu's own code.

Selected by `CELERY_BROKER_TRANSPORT` whenever the broker is Redis (config/settings/base.py).

Reconnecting. kombu's `Connection.ensure_connection` waits 2 s, 4 s, 6 s … up to 30 s between attempts, so a
worker whose broker was away for a minute noticed its return up to ~16 s late (issue 10's drills and newcomer
trial: work resumed 10–12 s after Redis was back). `Connection` below tries every second, then every
`RECONNECT_INTERVAL_MAX` seconds; Celery uses it through `AMQP` (`Celery(amqp="config.broker:AMQP")`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from time import monotonic
from typing import Any

from celery.app.amqp import AMQP as CeleryAMQP
from kombu import Connection as KombuConnection
from kombu.exceptions import ChannelError
from kombu.transport import filesystem, redis
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps as json_dumps

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    """kombu's Redis ack emulation; restoring unacked messages through a torn-down connection is skipped."""

    def restore_unacked(self, client: Any = None) -> None:
        """Put this channel's unacknowledged messages back on their queues (kombu does this when a channel
        closes and, through a finalizer, when it is garbage collected or the process exits). Skipped when the
        connection is gone: the messages stay in the unacked index, which the visibility timeout restores."""
        channel = self.channel
        if client is None and isinstance(channel, Channel) and channel.connection_gone():
            delivered: dict[Any, Any] = self._delivered or {}
            logger.warning("broker.restore_deferred", extra={"messages": len(delivered)})
            delivered.clear()
            return
        super().restore_unacked(client)


class Channel(redis.Channel):
    """kombu's Redis channel; `basic_ack`/`basic_reject` on a torn-down connection log and return."""

    QoS = QoS

    def connection_gone(self) -> bool:
        """True when this channel's connection was torn down: the channel was closed (its transport detached)
        or the transport's connection was collected (`Connection.collect()`/`close()` set `client` to None).
        Kombu does that only on connection loss, fork or shutdown; the channel's unacked messages were restored
        or come back after the visibility timeout, so an ack through it is meaningless either way."""
        transport = self.connection
        return transport is None or transport.client is None

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu builds a new `redis.Redis` on the channel's pool for every call without a client — every ack,
        every unacked-index update, every restore scan — and redis-py's constructor builds its ~200 response
        callbacks each time (≈ 90 µs; 9 % of the `loans` worker's interpreter time at 20 applications/s,
        issue 15). A client is thread-safe (each command checks a connection out of the pool), so one per channel
        and pool serves them all; a new pool (after a reconnect) gets a new client."""
        if client:
            yield client
            return
        pool = self.pool
        shared = self.__dict__.get("_keel_sync_client")
        if shared is None or shared.connection_pool is not pool:
            shared = self._create_client()  # type: ignore[attr-defined]
            self.__dict__["_keel_sync_client"] = shared
        yield shared

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        """Acknowledge a delivered message; dropped (with a warning) when the connection is gone."""
        if self.connection_gone():
            logger.warning("broker.ack_dropped", extra={"delivery_tag": str(delivery_tag), "reason": "connection gone"})
            return
        super().basic_ack(delivery_tag, multiple=multiple)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        """Reject a delivered message; dropped (with a warning) when the connection is gone (the message comes
        back through kombu's restore or the visibility timeout, as a requeue would have brought it)."""
        if self.connection_gone():
            logger.warning(
                "broker.reject_dropped", extra={"delivery_tag": str(delivery_tag), "reason": "connection gone"}
            )
            return
        super().basic_reject(delivery_tag, requeue=requeue)


class Transport(redis.Transport):
    """kombu's Redis transport with `Channel` above (same URL scheme, options and behaviour otherwise)."""

    Channel = Channel


RECONNECT_INTERVAL_MAX = 2.0


class Connection(KombuConnection):
    """kombu's Connection; while the broker is unreachable it retries after 1 s, then every <= 2 s (not 30 s)."""

    def ensure_connection(self, *args: Any, **kwargs: Any) -> Any:
        """As kombu's, with shorter default retry intervals (positional intervals, if given, win)."""
        if len(args) <= 2:
            kwargs.setdefault("interval_start", 1)
            kwargs.setdefault("interval_step", 1)
            kwargs.setdefault("interval_max", RECONNECT_INTERVAL_MAX)
        return super().ensure_connection(*args, **kwargs)


class AMQP(CeleryAMQP):
    """Celery's AMQP helper with Keel's `Connection` (workers, beat and the relay's publisher use it)."""

    Connection = Connection


class FilesystemChannel(filesystem.Channel):
    """kombu's file-system channel (the embedded broker of `make run`), except that a message file appears under
    its queue's name only once it is complete.

    Why (newcomer trial, 2026-12-02): kombu's `_put` creates `<time>_<uuid>.<queue>.msg` and then writes it,
    while `_get` of another process lists the folder and takes any `….<queue>.msg` without the writer's lock.
    A reader that comes between the two reads an empty file and raises `JSONDecodeError` out of the consumer:
    the worker dies with "Unrecoverable error" (the supervisor restarts it) and that message is gone. Here the
    message is written to `….<queue>.msg.tmp` (a name `_get` never matches) and renamed into place — atomic on
    one file system — so a reader sees a whole message or none. A `.tmp` left by a writer killed mid-write is
    never read; an undecodable `.msg` (from before this fix) is logged and skipped, not fatal."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + ".tmp"
        try:
            with open(partial, "wb", buffering=0) as f:
                filesystem.lock(f, filesystem.LOCK_EX)  # type: ignore[attr-defined]
                f.write(str_to_bytes(json_dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:  # type: ignore[override]
        while True:
            try:
                return super()._get(queue)
            except ValueError:  # JSONDecodeError: a torn file written before this fix; it is already removed
                logger.warning("broker.undecodable_message_skipped", extra={"queue": queue})


class FilesystemTransport(filesystem.Transport):
    """kombu's file-system transport with `FilesystemChannel` (selected in config/settings/base.py)."""

    Channel = FilesystemChannel
