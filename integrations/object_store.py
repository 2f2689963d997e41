"""S3-compatible object store (SeaweedFS, MinIO, AWS S3) behind one small client class."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from minio import Minio
from minio.error import S3Error

from integrations.settings import S3Settings


class ObjectStoreError(RuntimeError):
    """An object-store call failed; the message names the bucket/key and the server's answer."""


@dataclass(frozen=True)
class StoredObject:
    """One listed object."""

    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None

    @property
    def uri(self) -> str:
        """Stable s3:// URI of the object."""
        return f"s3://{self.bucket}/{self.key}"


class ObjectStore:
    """Buckets and objects in the configured S3 endpoint."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        parts = urlsplit(settings.endpoint)
        self._client = Minio(
            parts.netloc,
            access_key=settings.access_key,
            secret_key=settings.secret_key.get_secret_value(),
            secure=parts.scheme == "https",
            region=settings.region,
        )

    def ensure_bucket(self, bucket: str) -> None:
        """Create the bucket if it does not exist."""
        try:
            if not self._client.bucket_exists(bucket):
                self._client.make_bucket(bucket)
        except S3Error as exc:
            raise ObjectStoreError(f"bucket {bucket}: {exc.code}: {exc.message}") from exc

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write one object; return its ETag."""
        try:
            result = self._client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
        except S3Error as exc:
            raise ObjectStoreError(f"put s3://{bucket}/{key}: {exc.code}: {exc.message}") from exc
        return result.etag

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """Read one whole object."""
        try:
            response = self._client.get_object(bucket, key)
        except S3Error as exc:
            raise ObjectStoreError(f"get s3://{bucket}/{key}: {exc.code}: {exc.message}") from exc
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        """Stream every object under a prefix (paginated by the server, never loaded all at once)."""
        try:
            for item in self._client.list_objects(bucket, prefix=prefix, recursive=True):
                if item.is_dir or item.object_name is None:
                    continue
                yield StoredObject(
                    bucket=bucket,
                    key=item.object_name,
                    size=item.size or 0,
                    etag=(item.etag or "").strip('"'),
                    version_id=item.version_id,
                )
        except S3Error as exc:
            raise ObjectStoreError(f"list s3://{bucket}/{prefix}: {exc.code}: {exc.message}") from exc

    def presigned_get_url(self, bucket: str, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """Time-limited GET URL for one object."""
        return self._client.presigned_get_object(bucket, key, expires=expires)
