"""Where insurer files live: a small storage interface with two backends (SPEC §8, ADR 0028).

A location is named by a string on the `Insurer` (`outbound_folder`, `inbound_folder`):
- a local folder: an absolute path, or a path relative to `VAR_DIR` (the default, e.g.
  `insurers/sandbox-file/outbound` → `var/insurers/sandbox-file/outbound`);
- an SFTP folder: `sftp://user@host[:port]/path`, with the password and the server's host key taken from the
  insurer's encrypted credentials (`sftp_password`, `sftp_host_key` = "ssh-ed25519 AAAA…"); a server whose key
  does not match is refused (no trust on first use).

Writes are atomic for readers on the other side: each file is written under a temporary name (`.<name>.tmp`),
flushed and fsynced, then renamed into place; `write_files_atomic` writes its files in the given order, so a
batch's manifest (last) appears only after its data file is complete. Readers list only final names.
Errors surface as `StorageError` (transient: disk full, server down; `StorageMissingError` when the named file
is not there) or `StorageConfigurationError` (the location cannot work as configured).

`move` never overwrites (issue 11): the files moved into `imported/`, `quarantine/`, `duplicates/`, … are the
evidence of what an insurer sent, so a file whose name is already taken in the subfolder is kept under
`<stem>.<first 12 hex of its SHA-256><ext>` (`<stem>.<sha12>.<UTC timestamp><ext>` if that is taken too).
Locally the move is a hard link that fails on an existing name, then an unlink of the source; over SFTP the
name is checked before the `posix-rename` (only two movers racing on the same new name in the same instant
could still collide, and the import claim already serialises importers of one file).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from django.conf import settings

from apps.insurers.contracts import InsurerConfigurationError

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
SFTP_TIMEOUT_SECONDS = 10.0


class StorageError(OSError):
    """A location could not be read or written now (retry later)."""


class StorageMissingError(StorageError):
    """The named file is not in the location (not arrived yet, or moved away by another worker)."""


class StorageConfigurationError(InsurerConfigurationError):
    """A location is configured in a way that cannot work (bad URI, missing credentials or host key)."""


def check_name(name: str) -> str:
    """File names are plain names inside the location: no separators, no leading dot, bounded."""
    if not SAFE_NAME.match(name or "") or ".." in name:
        raise ValueError(f"unsafe file name {name!r}")
    return name


def kept_name(name: str, content: bytes, *, attempt: int) -> str:
    """The name a moved file takes when `name` is taken in the target subfolder: attempt 1 inserts the first 12
    hex digits of the content's SHA-256 before the last extension, attempt 2 adds a UTC timestamp as well
    (the same bytes were kept already, but we still do not replace them)."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    tag = hashlib.sha256(content).hexdigest()[:12]
    if attempt > 1:
        tag += "." + datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return check_name(f"{stem}.{tag}.{ext}" if ext else f"{stem}.{tag}")


class FileLocation(Protocol):
    def write_files_atomic(self, files: Sequence[tuple[str, bytes]]) -> None:
        """Write each (name, content) atomically, in order (put the manifest last)."""

    def read(self, name: str) -> bytes:
        """The file's bytes; `StorageMissingError` when it is not there."""

    def modified_at(self, name: str) -> datetime:
        """When the file was last written (UTC, the storage's own clock); `StorageMissingError` when absent."""

    def list_names(self, suffix: str = "") -> list[str]:
        """Final (non-temporary) file names directly in the location, sorted."""

    def move(self, name: str, subfolder: str) -> str | None:
        """Move a file into `subfolder` of the location (created if needed); never replaces a file there (see
        `kept_name`). Returns the name it was kept under, or None when the file had gone already."""

    def describe(self) -> str:
        """Where this is, without secrets (for logs and the exchange log)."""


def _link_or_rename(source: Path, target: Path) -> None:
    """Move `source` to `target` unless `target` exists (`FileExistsError`): a hard link, which cannot replace,
    then unlink. On a filesystem without hard links (some network mounts: EPERM, ENOTSUP, EXDEV…) an
    existence check and a rename instead."""
    try:
        os.link(source, target)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError:
        if target.exists():
            raise FileExistsError(str(target)) from None
        os.rename(source, target)
        return
    os.unlink(source)


class LocalFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"file://{self.root}"

    def _ensure(self, folder: Path) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {folder}: {exc.strerror}") from exc

    def write_files_atomic(self, files: Sequence[tuple[str, bytes]]) -> None:
        self._ensure(self.root)
        try:
            for name, content in files:
                final = self.root / check_name(name)
                temp = self.root / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
                with open(temp, "wb") as handle:
                    handle.write(content)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, final)
            directory = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(directory)  # the renames themselves survive a crash
            finally:
                os.close(directory)
        except OSError as exc:
            raise StorageError(f"cannot write to {self.root}: {exc.strerror or exc}") from exc

    def read(self, name: str) -> bytes:
        try:
            return (self.root / check_name(name)).read_bytes()
        except FileNotFoundError as exc:
            raise StorageMissingError(f"{name} is not in {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {name} in {self.root}: {exc.strerror or exc}") from exc

    def modified_at(self, name: str) -> datetime:
        try:
            return datetime.fromtimestamp((self.root / check_name(name)).stat().st_mtime, tz=UTC)
        except FileNotFoundError as exc:
            raise StorageMissingError(f"{name} is not in {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"cannot stat {name} in {self.root}: {exc.strerror or exc}") from exc

    def list_names(self, suffix: str = "") -> list[str]:
        if not self.root.exists():
            return []
        try:
            return sorted(
                entry.name
                for entry in os.scandir(self.root)
                if entry.is_file() and not entry.name.startswith(".") and entry.name.endswith(suffix)
            )
        except OSError as exc:
            raise StorageError(f"cannot list {self.root}: {exc.strerror or exc}") from exc

    def move(self, name: str, subfolder: str) -> str | None:
        """1. link the file into `subfolder` under its name — `link` fails rather than replace an existing file;
        2. if that name is taken, under `kept_name` (checksum, then checksum + timestamp);
        3. unlink the source. A source that has gone (another importer moved it) is not an error: None."""
        target = self.root / check_name(subfolder)
        self._ensure(target)
        source = self.root / check_name(name)
        try:
            kept = name
            for attempt in range(3):
                try:
                    _link_or_rename(source, target / kept)
                    break
                except FileExistsError:
                    if attempt == 2:
                        raise
                    kept = kept_name(name, source.read_bytes(), attempt=attempt + 1)
        except FileNotFoundError:
            return None  # another importer moved it first
        except OSError as exc:
            raise StorageError(f"cannot move {name} in {self.root}: {exc.strerror or exc}") from exc
        return kept


class _Missing(Exception):
    """Inside an SFTP operation: the named file is not there (turned into `StorageMissingError`)."""


class _Taken(Exception):
    """Inside an SFTP move: every name we would keep the file under is taken."""


class SftpFolder:
    """SFTP with asyncssh, one connection per operation (files are batches, not a stream). Each public
    method runs its own event loop, so it can be called from any synchronous worker thread."""

    def __init__(self, *, host: str, port: int, username: str, path: str, password: str, host_key: str) -> None:
        self.host, self.port, self.username, self.path = host, port, username, path.rstrip("/") or "/"
        self._password = password
        self._host_key = host_key

    def describe(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}{self.path}"

    def _run(self, operation: Any) -> Any:
        import asyncssh

        async def main() -> Any:
            known_hosts = asyncssh.import_known_hosts(f"[{self.host}]:{self.port} {self._host_key}\n")
            async with asyncssh.connect(
                self.host,
                port=self.port,
                username=self.username,
                password=self._password,
                known_hosts=known_hosts,
                client_keys=None,
                agent_path=None,
                connect_timeout=SFTP_TIMEOUT_SECONDS,
            ) as connection:
                async with connection.start_sftp_client() as sftp:
                    return await asyncio.wait_for(operation(sftp), timeout=SFTP_TIMEOUT_SECONDS * 3)

        try:
            return asyncio.run(main())
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise StorageError(f"SFTP {self.describe()}: {type(exc).__name__}: {exc}") from exc

    def _p(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])

    def write_files_atomic(self, files: Sequence[tuple[str, bytes]]) -> None:
        async def op(sftp: Any) -> None:
            await sftp.makedirs(self.path, exist_ok=True)
            for name, content in files:
                final = self._p(check_name(name))
                temp = self._p(f".{name}.{uuid.uuid4().hex[:8]}.tmp")
                async with sftp.open(temp, "wb") as handle:
                    await handle.write(content)
                    await handle.fsync()
                await sftp.posix_rename(temp, final)

        self._run(op)

    def read(self, name: str) -> bytes:
        import asyncssh

        async def op(sftp: Any) -> bytes:
            try:
                async with sftp.open(self._p(check_name(name)), "rb") as handle:
                    return bytes(await handle.read())
            except asyncssh.SFTPNoSuchFile as exc:
                raise _Missing(name) from exc

        try:
            return bytes(self._run(op))
        except _Missing as exc:
            raise StorageMissingError(f"{name} is not in {self.describe()}") from exc

    def modified_at(self, name: str) -> datetime:
        import asyncssh

        async def op(sftp: Any) -> float:
            try:
                return float((await sftp.stat(self._p(check_name(name)))).mtime)
            except asyncssh.SFTPNoSuchFile as exc:
                raise _Missing(name) from exc

        try:
            return datetime.fromtimestamp(self._run(op), tz=UTC)
        except _Missing as exc:
            raise StorageMissingError(f"{name} is not in {self.describe()}") from exc

    def list_names(self, suffix: str = "") -> list[str]:
        async def op(sftp: Any) -> list[str]:
            if not await sftp.exists(self.path):
                return []
            names = []
            for entry in await sftp.readdir(self.path):
                name = entry.filename
                if name.startswith(".") or not name.endswith(suffix):
                    continue
                if entry.attrs.type == 1:  # SSH_FILEXFER_TYPE_REGULAR
                    names.append(name)
            return sorted(names)

        return list(self._run(op))

    def move(self, name: str, subfolder: str) -> str | None:
        """Like `LocalFolder.move`: a taken name in `subfolder` is kept under `kept_name` (read once to hash)."""

        async def op(sftp: Any) -> str | None:
            await sftp.makedirs(self._p(check_name(subfolder)), exist_ok=True)
            source = self._p(check_name(name))
            if not await sftp.exists(source):
                return None
            kept, content = name, b""
            for attempt in range(1, 3):
                if not await sftp.exists(self._p(subfolder, kept)):
                    break
                if not content:
                    async with sftp.open(source, "rb") as handle:
                        content = bytes(await handle.read())
                kept = kept_name(name, content, attempt=attempt)
            else:
                if await sftp.exists(self._p(subfolder, kept)):
                    raise _Taken(kept)
            await sftp.posix_rename(source, self._p(subfolder, kept))
            return kept

        try:
            result = self._run(op)
        except _Taken as exc:
            raise StorageError(f"cannot move {name} in {self.describe()}: {exc} is taken") from exc
        return str(result) if result is not None else None


def location_for(uri: str, *, credentials: dict[str, Any], what: str) -> FileLocation:
    """The location a folder setting names. Raises `StorageConfigurationError` saying what is wrong."""
    uri = (uri or "").strip()
    if not uri:
        raise StorageConfigurationError(f"{what} is not set")
    if uri.startswith("sftp://"):
        parts = urlsplit(uri)
        if not parts.hostname or not parts.username:
            raise StorageConfigurationError(f"{what} must look like sftp://user@host[:port]/path")
        password = str(credentials.get("sftp_password") or "")
        host_key = str(credentials.get("sftp_host_key") or "")
        if not password:
            raise StorageConfigurationError(f"{what} is SFTP but the insurer's credentials have no sftp_password")
        if not host_key:
            raise StorageConfigurationError(
                f"{what} is SFTP but the insurer's credentials have no sftp_host_key (the server's public key)"
            )
        return SftpFolder(
            host=parts.hostname,
            port=parts.port or 22,
            username=unquote(parts.username),
            path=unquote(parts.path) or "/",
            password=password,
            host_key=host_key,
        )
    if "://" in uri and not uri.startswith("file://"):
        raise StorageConfigurationError(f"{what} uses an unsupported scheme (use a folder path or sftp://)")
    path = Path(uri.removeprefix("file://"))
    return LocalFolder(path if path.is_absolute() else Path(settings.VAR_DIR) / path)
