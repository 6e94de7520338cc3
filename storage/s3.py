"""A ``BlobStore`` on S3 or MinIO through aioboto3.

One client per store, opened once and kept for the life of the process: a client
owns the HTTP connection pool, and building one loads botocore's service models
from disk, which is far too slow to repeat per request.

Every vendor failure (botocore, aiohttp, sockets, timeouts) leaves this module as
``StorageUnavailable`` or ``ObjectNotFound``; services never import botocore.

Every operation has a deadline of its own (``settings.S3``), besides botocore's
connect and read timeouts and retries: a store that accepts connections and
answers nothing fails an operation in ``timeout_seconds`` (plus the transfer
time a large body is allowed) as ``StorageUnavailable``, so a request that
needs it gets its 503 in seconds, never after every retry's read timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pinhole.errors import ObjectNotFound, StorageUnavailable
from pinhole.ports import ObjectInfo, StoredObject
from pinhole.settings import S3

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})

# AWS answers 409 when two conditional writes of one key overlap; the documented
# remedy is to retry, after which the loser sees 412 like any other.
_CONFLICT_RETRIES = 4

_HASH_BUFFER = 1024 * 1024

_URL_PARAMS = frozenset({"endpoint", "region", "create", "access_key", "secret_key"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _precondition_failed(exc: Any) -> bool:
    return _error_code(exc) == "PreconditionFailed" or _http_status(exc) == 412


@contextlib.contextmanager
def _translate(op: str, key: str) -> Iterator[None]:
    """Turn whatever the SDK or the network raised into a port error."""
    try:
        yield
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message") or ""
        raise StorageUnavailable(
            f"s3 {op} {key!r}: {_error_code(exc) or _http_status(exc)} {message}".rstrip()
        ) from exc
    # TimeoutError is asyncio.TimeoutError on 3.11 and an OSError besides.
    except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
        raise StorageUnavailable(f"s3 {op} {key!r}: {type(exc).__name__}: {exc}") from exc


def _open_for_upload(path: Path) -> tuple[IO[bytes], int, str]:
    """Open ``path`` and return it with its size and base64 SHA-256.

    Handing botocore the checksum up front stops it from hashing the file itself,
    which it would do synchronously on the event loop (and twice over plain
    http, where it also signs the payload)."""
    f = open(path, "rb")  # noqa: SIM115 - the caller closes it after the upload
    try:
        digest = hashlib.sha256()
        size = 0
        while chunk := f.read(_HASH_BUFFER):
            digest.update(chunk)
            size += len(chunk)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f, size, base64.b64encode(digest.digest()).decode("ascii")


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"s3 URL parameter {name}={value!r} is not a boolean")


class S3BlobStore:
    """Objects in one bucket. Keys are used verbatim."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        create_bucket: bool = False,
        limits: S3 | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("s3 bucket name is empty")
        if (access_key is None) != (secret_key is None):
            raise ValueError("give both access_key and secret_key, or neither")
        if endpoint_url is not None and urlsplit(endpoint_url).scheme not in ("http", "https"):
            raise ValueError(f"s3 endpoint must be an http(s) URL: {endpoint_url!r}")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.create_bucket = create_bucket
        self.limits = limits = limits or S3()
        # Without explicit keys botocore walks its usual chain (env, profile, IMDS).
        self._session = aioboto3.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
        )
        s3_options: dict[str, Any] = {
            # We send a checksum header on every put (botocore's CRC32, or our
            # own SHA-256 for files), and the signature covers that header, so
            # signing the payload as well would only add a blocking hash pass.
            "payload_signing_enabled": False,
        }
        if endpoint_url is not None:
            # MinIO and other self-hosted endpoints have no per-bucket DNS names.
            s3_options["addressing_style"] = "path"
        self._config = Config(
            region_name=region,
            retries={"max_attempts": limits.attempts, "mode": "standard"},
            connect_timeout=limits.connect_timeout_seconds,
            read_timeout=limits.read_timeout_seconds,
            s3=s3_options,
        )
        self._stack = AsyncExitStack()
        self._client_: Any = None
        self._bucket_ready = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, limits: S3 | None = None) -> S3BlobStore:
        """``s3://bucket?endpoint=http://127.0.0.1:9000&region=us-east-1&create=1``.

        ``create`` defaults to true so a fresh dev MinIO works out of the box;
        pass ``create=0`` where the bucket is provisioned (and IAM denies it)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"not an s3://bucket storage URL: {url!r}")
        if parts.path not in ("", "/"):
            raise ValueError(f"s3 storage URL takes no path after the bucket: {url!r}")
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
        unknown = set(query) - _URL_PARAMS
        if unknown:
            raise ValueError(f"unknown s3 URL parameters: {', '.join(sorted(unknown))}")

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[-1] if values else None

        create = one("create")
        return cls(
            parts.netloc,
            endpoint_url=one("endpoint") or None,
            region=one("region") or "us-east-1",
            access_key=one("access_key") or None,
            secret_key=one("secret_key") or None,
            create_bucket=True if create is None else _parse_bool("create", create),
            limits=limits,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    async def start(self) -> None:
        """Open the client (and create the bucket if configured) now rather than
        on the first request, so a misconfiguration fails at startup."""
        async with self._deadline("start", self.bucket):
            await self._client()

    @contextlib.asynccontextmanager
    async def _deadline(
        self, op: str, key: str, seconds: float | None = None
    ) -> AsyncIterator[asyncio.Timeout]:
        """At most ``seconds`` (``limits.timeout_seconds``) for the block, which
        may extend it (``reschedule``) once it knows how many bytes it moves;
        past it, ``StorageUnavailable``. botocore's own timeouts bound each
        socket wait, not an operation: retries and a store that trickles bytes
        would stretch one far beyond them."""
        seconds = self.limits.timeout_seconds if seconds is None else seconds
        try:
            async with asyncio.timeout(seconds) as timeout:
                yield timeout
        except TimeoutError:
            raise StorageUnavailable(
                f"s3 {op} {key!r}: no answer within the deadline ({seconds:g}s)"
            ) from None

    async def _client(self) -> Any:
        if self._client_ is not None and self._bucket_ready:
            return self._client_
        async with self._lock:
            if self._client_ is None:
                with _translate("connect", self.bucket):
                    self._client_ = await self._stack.enter_async_context(
                        self._session.client(
                            "s3",
                            endpoint_url=self.endpoint_url,
                            region_name=self.region,
                            config=self._config,
                        )
                    )
            if not self._bucket_ready:
                if self.create_bucket:
                    await self._ensure_bucket(self._client_)
                # Only set once it worked: a transient failure retries next call.
                self._bucket_ready = True
            return self._client_

    async def _ensure_bucket(self, client: Any) -> None:
        with _translate("create-bucket", self.bucket):
            try:
                # Head first so a store whose IAM role may not CreateBucket
                # still works once the bucket exists.
                await client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _error_code(exc) not in _NO_BUCKET:
                    raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                await client.create_bucket(**kwargs)
            except ClientError as exc:
                # Another process won the race to create it: that is success.
                if _error_code(exc) != "BucketAlreadyOwnedByYou":
                    raise

    async def _put_object(
        self,
        key: str,
        body: bytes | IO[bytes],
        params: dict[str, Any],
        *,
        if_absent: bool,
        size: int,
    ) -> bool:
        async with self._deadline("put", key, self.limits.transfer_seconds(size)):
            return await self._put_attempts(key, body, params, if_absent=if_absent)

    async def _put_attempts(
        self, key: str, body: bytes | IO[bytes], params: dict[str, Any], *, if_absent: bool
    ) -> bool:
        client = await self._client()
        if if_absent:
            params["IfNoneMatch"] = "*"
        with _translate("put", key):
            for attempt in range(_CONFLICT_RETRIES):
                try:
                    await client.put_object(Bucket=self.bucket, Key=key, Body=body, **params)
                    return True
                except ClientError as exc:
                    if if_absent and _precondition_failed(exc):
                        return False
                    retryable = _error_code(exc) == "ConditionalRequestConflict"
                    if not retryable or attempt == _CONFLICT_RETRIES - 1:
                        raise
                if not isinstance(body, bytes):
                    body.seek(0)
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def put(
        self, key: str, body: bytes, *, content_type: str, if_absent: bool = False
    ) -> bool:
        return await self._put_object(
            key, body, {"ContentType": content_type}, if_absent=if_absent, size=len(body)
        )

    async def put_file(
        self, key: str, path: Path, *, content_type: str, if_absent: bool = False
    ) -> bool:
        # A missing or unreadable source is the caller's bug, not an outage, so
        # its OSError is left as it is rather than becoming StorageUnavailable.
        f, size, sha256 = await asyncio.to_thread(_open_for_upload, path)
        try:
            # aiohttp reads a file body in its executor, chunk by chunk, so the
            # upload never holds the whole file in memory.
            return await self._put_object(
                key,
                f,
                {"ContentType": content_type, "ContentLength": size, "ChecksumSHA256": sha256},
                if_absent=if_absent,
                size=size,
            )
        finally:
            await asyncio.to_thread(f.close)

    async def get(self, key: str) -> StoredObject:
        async with self._deadline("get", key) as deadline:
            client = await self._client()
            with _translate("get", key):
                try:
                    resp = await client.get_object(Bucket=self.bucket, Key=key)
                except ClientError as exc:
                    if _error_code(exc) in _NOT_FOUND:
                        raise ObjectNotFound(key) from None
                    raise
                # An original is large: its body gets the transfer time its size needs.
                size = int(resp.get("ContentLength") or 0)
                deadline.reschedule(
                    (deadline.when() or 0.0) + size / self.limits.min_bytes_per_second
                )
                # Variants and manifests are small: one read is simpler than a stream.
                async with resp["Body"] as stream:
                    body: bytes = await stream.read()
        return StoredObject(info=self._info(key, resp, size=len(body)), body=body)

    async def head(self, key: str) -> ObjectInfo | None:
        async with self._deadline("head", key):
            client = await self._client()
            with _translate("head", key):
                try:
                    resp = await client.head_object(Bucket=self.bucket, Key=key)
                except ClientError as exc:
                    # HEAD has no error body, so a 404 is all we get.
                    if _error_code(exc) in _NOT_FOUND or _http_status(exc) == 404:
                        return None
                    raise
        return self._info(key, resp, size=int(resp["ContentLength"]))

    async def delete(self, key: str) -> None:
        async with self._deadline("delete", key):
            client = await self._client()
            with _translate("delete", key):
                # S3 answers 204 for a missing key too, so this is idempotent as is.
                await client.delete_object(Bucket=self.bucket, Key=key)

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Keys under ``prefix`` in S3's (UTF-8 byte) order.

        ListObjectsV2 does not return content types, so each ``ObjectInfo``
        carries the default; ``head`` the key if the type matters."""
        async with self._deadline("list", prefix):
            client = await self._client()
        paginator = client.get_paginator("list_objects_v2")
        pages = aiter(paginator.paginate(Bucket=self.bucket, Prefix=prefix))
        async with contextlib.aclosing(pages):
            while True:
                # A deadline per page, not for the listing: the caller's work
                # between pages is no part of the store's answer.
                async with self._deadline("list", prefix):
                    with _translate("list", prefix):
                        page = await anext(pages, None)
                if page is None:
                    return
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=str(obj["Key"]),
                        size=int(obj["Size"]),
                        last_modified=float(obj["LastModified"].timestamp()),
                    )

    async def ping(self) -> None:
        async with self._deadline("ping", self.bucket):
            client = await self._client()
            with _translate("ping", self.bucket):
                await client.head_bucket(Bucket=self.bucket)

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack = self._stack, AsyncExitStack()
            self._client_ = None
            self._bucket_ready = False
            with _translate("close", self.bucket):
                await stack.aclose()

    @staticmethod
    def _info(key: str, resp: Any, *, size: int) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=size,
            last_modified=float(resp["LastModified"].timestamp()),
            content_type=str(resp.get("ContentType") or "application/octet-stream"),
        )
