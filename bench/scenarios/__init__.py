"""The benchmark's scenarios, in the order they run (numbers follow issue 8)."""

from __future__ import annotations

from bench.scenarios.base import Context, Scenario
from bench.scenarios.frames import FramesJpegLs, FramesJpegLsAnySyntax, FramesNative
from bench.scenarios.ingest import IngestFourClients, IngestOneClient
from bench.scenarios.large_stow import LargeStow
from bench.scenarios.metadata import SeriesMetadata
from bench.scenarios.qido import StudyList
from bench.scenarios.rendered import Rendered, StudyThumbnails, Thumbnail
from bench.scenarios.retrieve import SeriesRetrieve

#: Scenario ids that do not depend on query profiles, in run order (QIDO profiles go between).
INGEST_IDS = ("ingest_1", "ingest_4")
LATER = (
    SeriesMetadata,
    FramesNative,
    FramesJpegLs,
    FramesJpegLsAnySyntax,
    Rendered,
    Thumbnail,
    StudyThumbnails,
    SeriesRetrieve,
    LargeStow,
)


def ingest_scenarios(context: Context) -> list[Scenario]:
    """1: the bulk studies, one part by one client, the rest by four."""
    studies = context.dataset.groups["bulk"].studies
    single = context.size.single_client_studies
    return [
        IngestOneClient(context, studies[:single]),
        IngestFourClients(context, studies[single:]),
    ]


def read_scenarios(context: Context) -> list[Scenario]:
    """3-7 and 2: everything that runs once the dataset is stored."""
    qido: list[Scenario] = [
        StudyList(context, profile, params) for profile, params in context.qido_profiles.items()
    ]
    return qido + [scenario(context) for scenario in LATER]


def all_ids(qido_profiles: list[str]) -> list[str]:
    return [*INGEST_IDS, *qido_profiles, *(scenario.id for scenario in LATER)]
