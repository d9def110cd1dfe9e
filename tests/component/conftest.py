"""Fixtures for component tests: real servers on loopback, one fresh store per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.support.seaweed import SeaweedServer, seaweed_fixture

from tessera_common.blobstore import ObjectStoreBlobs, open_blob_store
from tessera_common.settings import Settings

s3_server = seaweed_fixture("s3_server")


def _local_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, blob_backend="local", blob_root=tmp_path / "objects")


def _s3_settings(tmp_path: Path, server: SeaweedServer) -> Settings:
    endpoint = server.endpoint
    return Settings(
        data_dir=tmp_path,
        blob_backend="s3",
        s3_bucket=endpoint.bucket,
        s3_endpoint=endpoint.url,
        s3_region=endpoint.region,
        s3_access_key_id=endpoint.access_key_id,
        s3_secret_access_key=endpoint.secret_access_key,
        s3_allow_http=True,
    )


@pytest.fixture(params=["local", "s3"])
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStoreBlobs]:
    """An empty ``BlobStore`` on each backend; the S3 server starts only when a test needs it.

    The S3 bucket is shared by the session, so every object is deleted after each test."""
    if request.param == "local":
        settings = _local_settings(tmp_path)
    else:
        settings = _s3_settings(tmp_path, request.getfixturevalue("s3_server"))
    store = open_blob_store(settings)
    try:
        yield store
    finally:
        keys = [info.key async for info in store.list("")]
        for key in keys:
            await store.delete(key)
