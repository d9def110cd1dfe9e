"""Benchmark sizes (``--size``): how much data is loaded and how many requests each scenario sends.

Every loop in the suite is bounded by these counts *and* by ``scenario_seconds`` per scenario and
server, so a slow server shortens a run instead of stretching it.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class Size:
    name: str
    #: bulk studies (tiny images) stored by the two ingest scenarios
    studies: int
    #: of those, the studies stored by one client; the rest is stored by four
    single_client_studies: int
    #: rows = columns of the bulk images (tiny, so that 10k studies load in minutes)
    bulk_rows: int
    #: the series of the metadata scenario: instances and image size
    metadata_instances: int
    metadata_rows: int
    #: single-frame CT instances stored native and JPEG-LS (frames, rendered, retrieve)
    frame_instances: int
    frame_rows: int
    #: the multi-frame instance of the large-object STOW scenario
    large_object_bytes: int
    #: instances per STOW request
    batch: int
    #: interleaved rounds (A B A B ...) per scenario
    rounds: int
    #: requests per server over all rounds
    qido_requests: int
    metadata_requests: int
    frame_requests: int
    rendered_requests: int
    thumbnail_requests: int
    retrieve_requests: int
    #: time budget per scenario and server; a scenario past it stops sending requests
    scenario_seconds: float
    #: time budget for storing the dataset on one server (ingest scenarios and fixtures)
    load_seconds: float


SIZES: dict[str, Size] = {
    size.name: size
    for size in (
        Size(
            name="tiny",
            studies=6,
            single_client_studies=2,
            bulk_rows=16,
            metadata_instances=20,
            metadata_rows=64,
            frame_instances=3,
            frame_rows=512,
            large_object_bytes=8 * MIB,
            batch=10,
            rounds=2,
            qido_requests=6,
            metadata_requests=4,
            frame_requests=24,
            rendered_requests=8,
            thumbnail_requests=4,
            retrieve_requests=2,
            scenario_seconds=15,
            load_seconds=60,
        ),
        Size(
            name="small",
            studies=100,
            single_client_studies=30,
            bulk_rows=16,
            metadata_instances=1000,
            metadata_rows=64,
            frame_instances=20,
            frame_rows=512,
            large_object_bytes=256 * MIB,
            batch=25,
            rounds=5,
            qido_requests=300,
            metadata_requests=50,
            frame_requests=2000,
            rendered_requests=500,
            thumbnail_requests=60,
            retrieve_requests=40,
            scenario_seconds=45,
            load_seconds=300,
        ),
        Size(
            name="medium",
            studies=1000,
            single_client_studies=100,
            bulk_rows=16,
            metadata_instances=1000,
            metadata_rows=64,
            frame_instances=50,
            frame_rows=512,
            large_object_bytes=256 * MIB,
            batch=50,
            rounds=5,
            qido_requests=200,
            metadata_requests=30,
            frame_requests=2000,
            rendered_requests=400,
            thumbnail_requests=60,
            retrieve_requests=20,
            scenario_seconds=90,
            load_seconds=1200,
        ),
        Size(
            name="large",
            studies=10_000,
            single_client_studies=300,
            bulk_rows=16,
            metadata_instances=1000,
            metadata_rows=64,
            frame_instances=100,
            frame_rows=512,
            large_object_bytes=1024 * MIB,
            batch=50,
            rounds=5,
            qido_requests=200,
            metadata_requests=30,
            frame_requests=4000,
            rendered_requests=400,
            thumbnail_requests=60,
            retrieve_requests=20,
            scenario_seconds=180,
            load_seconds=3600,
        ),
    )
}
