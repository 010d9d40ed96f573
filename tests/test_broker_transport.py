"""config/broker.py: an ack through a torn-down Redis connection is dropped, never raised into the worker.

Issue 10, ADR 0024. The worker acknowledges a late-ack task on its event loop after the task ran; if Redis went
away meanwhile, the consumer has collected and closed the connection that message came from. Stock kombu then
raises `AttributeError` from `Channel._connparams` (not a connection error, so Celery's "Couldn't ack" does not
catch it) and the worker exits. These tests put a real message on a private Redis, tear its connection down the
way `Consumer.on_connection_error_after_connected` does, and ack it as Celery does (`ack_log_error`).
"""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from kombu import Connection, Exchange, Queue
from kombu.message import Message
from kombu.transport import redis as kombu_redis

from config import broker
from tests.faults.harness import PrivateRedis

QUEUE = Queue("broker-test", Exchange("broker-test"), "broker-test")


def _spare_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="keel-broker-") as base:
        server = PrivateRedis(Path(base), _spare_port())
        server.start()
        try:
            yield f"redis://127.0.0.1:{server.port}/0"
        finally:
            server.stop()


_CHANNELS: list[object] = []


@pytest.fixture(autouse=True)
def _no_finalizers_at_exit() -> Iterator[None]:
    """kombu registers an at-exit restore per channel; the torn-down ones of these tests must not run it then."""
    yield
    while _CHANNELS:
        _CHANNELS.pop().qos._on_collect.cancel()  # type: ignore[attr-defined]


def _deliver(connection: Connection) -> Message:
    """Publish one message and receive it unacknowledged on a consumer channel (what a worker holds)."""
    channel = connection.channel()
    _CHANNELS.append(channel)
    producer = connection.Producer(channel)
    producer.publish({"row": 1}, exchange=QUEUE.exchange, routing_key="broker-test", declare=[QUEUE])
    received: list[Message] = []
    connection.Consumer(QUEUE, callbacks=[lambda _body, message: received.append(message)], channel=channel).consume()
    connection.drain_events(timeout=5)
    assert len(received) == 1
    return received[0]


def _waiting_and_unacked(url: str) -> tuple[int, int]:
    """(messages waiting in the queue, messages in kombu's unacked index) as Redis holds them."""
    with Connection(url) as connection:
        client = connection.default_channel.client
        return int(client.llen("broker-test")), int(client.hlen("unacked"))


def _tear_down_mid_close(connection: Connection, message: Message) -> None:
    """The state the worker crashed in: the channel was not closed (its close died on the lost socket), kombu
    dropped its connection pools, and `Connection.collect()` set the transport's `client` to None."""
    channel = message.channel
    channel._disconnect_pools()
    connection._do_close_transport()
    assert channel.connection is not None
    assert channel.connection.client is None


def test_stock_kombu_still_raises_attribute_error_in_that_state(redis_url: str) -> None:
    """Why config/broker.py exists: with kombu's own transport the ack escapes as AttributeError (the worker's
    "Unrecoverable error"). If a kombu upgrade makes this fail, the workaround can go (ADR 0024)."""
    connection = Connection(redis_url, transport=kombu_redis.Transport)
    message = _deliver(connection)
    _tear_down_mid_close(connection, message)
    with pytest.raises(AttributeError, match="hostname"):
        message.ack_log_error(logging.getLogger("test"), connection.connection_errors)


@pytest.mark.parametrize("settle", ["ack", "reject"])
def test_keel_transport_drops_the_ack_and_keeps_the_message(
    redis_url: str, settle: str, caplog: pytest.LogCaptureFixture
) -> None:
    connection = Connection(redis_url, transport=broker.Transport)
    message = _deliver(connection)
    _tear_down_mid_close(connection, message)
    with caplog.at_level(logging.WARNING, logger="config.broker"):
        if settle == "ack":
            message.ack_log_error(logging.getLogger("test"), connection.connection_errors)
        else:
            message.reject_log_error(logging.getLogger("test"), connection.connection_errors, requeue=True)
    assert [r.getMessage() for r in caplog.records] == [f"broker.{settle}_dropped"]
    # Not lost: it stays in kombu's unacked index, which the visibility timeout restores to the queue.
    assert _waiting_and_unacked(redis_url) == (0, 1)


def test_keel_transport_after_a_real_collect_and_close_neither_raises_nor_loses(redis_url: str) -> None:
    """The public teardown Celery runs (collect, then close) with Redis up: the channel is detached, kombu
    restored its unacked message to the queue, and the late ack is dropped."""
    connection = Connection(redis_url, transport=broker.Transport)
    message = _deliver(connection)
    connection.collect(socket_timeout=0.1)
    connection.close()
    message.ack_log_error(logging.getLogger("test"), connection.connection_errors)
    waiting, unacked = _waiting_and_unacked(redis_url)
    assert waiting + unacked >= 1
    assert waiting == 1


def test_keel_transport_acks_normally_on_a_live_connection(redis_url: str) -> None:
    connection = Connection(redis_url, transport=broker.Transport)
    message = _deliver(connection)
    assert _waiting_and_unacked(redis_url) == (0, 1)
    message.ack()
    assert _waiting_and_unacked(redis_url) == (0, 0)
    connection.close()


def test_settings_select_the_keel_transport_for_a_redis_broker() -> None:
    """base.py names config.broker:Transport whenever CELERY_BROKER_URL is redis:// (tests use memory://)."""
    source = (Path(settings.BASE_DIR) / "config" / "settings" / "base.py").read_text()
    assert 'CELERY_BROKER_TRANSPORT = "config.broker:Transport"' in source
    with Connection("redis://127.0.0.1:1/0", transport="config.broker:Transport") as connection:
        assert type(connection.transport) is broker.Transport
        assert connection.transport.Channel is broker.Channel


def test_celery_connections_retry_after_one_second_then_every_two(monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's default waits grow to 30 s, so a worker noticed a returned broker up to ~16 s late; Keel's
    Connection (Celery's `amqp` class) retries after 1 s, then every ≤ 2 s. Positional intervals still win."""
    from config.celery import app

    connection = app.connection_for_read()
    assert isinstance(connection, broker.Connection)
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(connection, "_ensure_connection", lambda *args, **kwargs: seen.append(kwargs))
    errback = print
    connection.ensure_connection(errback, None, callback=None)  # what Celery's consumer calls
    connection.ensure_connection(errback, None, 5, 5, 60)
    assert seen == [
        {"interval_start": 1, "interval_step": 1, "interval_max": broker.RECONNECT_INTERVAL_MAX, "callback": None},
        {},
    ]
    assert broker.RECONNECT_INTERVAL_MAX == 2.0


def test_acks_share_one_redis_client_per_channel_and_pool(redis_url: str, monkeypatch) -> None:
    """kombu builds a `redis.Redis` per ack (≈ 90 µs of CPU each); Keel's channel builds one per channel and pool
    (issue 15) — and a fresh one after a reconnect gave the channel a new pool. The acks still land."""
    import redis as redis_py

    built: list[object] = []
    real_init = redis_py.Redis.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        real_init(self, *args, **kwargs)

    connection = Connection(redis_url, transport=broker.Transport)
    messages = [_deliver(connection) for _ in range(3)]
    channels = {id(m.channel) for m in messages}
    monkeypatch.setattr(redis_py.Redis, "__init__", counting_init)
    for message in messages:
        message.ack()
    assert built == []  # each channel's client was made when its delivery was indexed; no ack makes one
    assert len(channels) == 3
    assert _waiting_and_unacked(redis_url) == (0, 0)

    channel = messages[0].channel
    with channel.conn_or_acquire() as first:
        pass
    channel._pool = None  # what a reconnect does: the next call makes a new pool
    with channel.conn_or_acquire() as second:
        assert second is not first
        assert second.connection_pool is channel.pool
    connection.release()
