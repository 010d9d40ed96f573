"""A real SFTP server for tests: asyncssh serving a folder (chrooted) on a loopback port, in its own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

PORTS = range(22160, 22170)  # this engineer's SFTP range on the shared machine
USERNAME = "keel"
PASSWORD = "s3cret-sftp-password"


@dataclass(frozen=True)
class SftpServer:
    host: str
    port: int
    root: Path
    host_key: str  # "ssh-ed25519 AAAA…", what the client must pin

    def uri(self, path: str) -> str:
        return f"sftp://{USERNAME}@{self.host}:{self.port}/{path.lstrip('/')}"


class _Auth(asyncssh.SSHServer):  # type: ignore[misc]
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USERNAME and password == PASSWORD


@contextmanager
def sftp_server(root: Path) -> Iterator[SftpServer]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True, name="test-sftp-server")
    thread.start()
    key = asyncssh.generate_private_key("ssh-ed25519")

    def factory(channel: Any) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(channel, chroot=str(root))

    async def start() -> tuple[Any, int]:
        last: Exception | None = None
        for port in PORTS:
            try:
                server = await asyncssh.create_server(
                    _Auth, "127.0.0.1", port, server_host_keys=[key], sftp_factory=factory
                )
                return server, port
            except OSError as exc:  # in use by a parallel run
                last = exc
        raise RuntimeError(f"no free SFTP port in {PORTS}") from last

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    public = key.export_public_key().decode().split()
    try:
        yield SftpServer(host="127.0.0.1", port=port, root=root, host_key=f"{public[0]} {public[1]}")
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
