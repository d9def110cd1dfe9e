"""The change feed and its webhooks through the whole system (``tessera serve``) on loopback.

Four instances are stored by STOW-RS and one is deleted; the feed is read with a time window,
an offset and a limit, and a webhook receiver (aiohttp, on 127.0.0.1) that refuses the first
delivery must see it again, signed, and every other event once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from tests.support.archive import series_uid, sop_uid, study_uid, synthetic_instance
from tests.support.http import stow
from tests.support.system import RunningTessera, free_port, start_tessera

from tessera_gateway.webhooks import signature

pytestmark = pytest.mark.slow

SECRET = "e2e-webhook-secret"
STUDY = 7


@dataclass
class Receiver:
    """A webhook endpoint in a thread of its own; the very first delivery is answered 500."""

    port: int = field(default_factory=free_port)
    deliveries: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            status = 500 if not self.deliveries else 204
            self.deliveries.append((dict(request.headers), body, status))
        return web.Response(status=status)

    def accepted(self) -> list[tuple[dict[str, str], bytes, int]]:
        with self.lock:
            return [d for d in self.deliveries if d[2] < 300]

    @contextmanager
    def serve(self) -> Iterator[None]:
        loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            yield
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.run_until_complete(runner.cleanup())
            loop.close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    with endpoint.serve():
        yield endpoint


@pytest.fixture(scope="module")
def tessera(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[RunningTessera]:
    env = {
        "TESSERA_WEBHOOK_URLS": receiver.url,
        "TESSERA_WEBHOOK_SECRET": SECRET,
        "TESSERA_WEBHOOK_BACKOFF_SECONDS": "0.5",
    }
    running = start_tessera(tmp_path_factory.mktemp("changefeed") / "data", env=env)
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture(scope="module")
def changes(tessera: RunningTessera) -> datetime:
    """Store four instances, delete the fourth; returns a time before the first change."""
    before = datetime.now(UTC)
    response = stow(tessera.root, [synthetic_instance(STUDY, 1, n) for n in (1, 2, 3, 4)])
    assert response.status_code == 200, response.text
    instance = (
        f"{tessera.root}/studies/{study_uid(STUDY)}/series/{series_uid(STUDY, 1)}"
        f"/instances/{sop_uid(STUDY, 1, 4)}"
    )
    assert requests.delete(instance, timeout=30).status_code == 204
    return before


def feed(tessera: RunningTessera, **params: str) -> list[dict[str, Any]]:
    response = requests.get(f"{tessera.root}/changefeed", params=params, timeout=30)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


def test_feed_lists_the_changes(tessera: RunningTessera, changes: datetime) -> None:
    entries = feed(tessera)
    assert [e["Sequence"] for e in entries] == [1, 2, 3, 4, 5]
    stored = sorted(e["SopInstanceUid"] for e in entries if e["Action"] == "create")
    assert stored == [sop_uid(STUDY, 1, n) for n in (1, 2, 3, 4)]
    assert entries[-1]["Action"] == "delete" and entries[-1]["SopInstanceUid"] == sop_uid(
        STUDY, 1, 4
    )
    states = {e["SopInstanceUid"]: e["State"] for e in entries if e["Action"] == "create"}
    assert states[sop_uid(STUDY, 1, 4)] == "deleted"
    assert {states[sop_uid(STUDY, 1, n)] for n in (1, 2, 3)} == {"current"}
    current = next(e for e in entries if e["SopInstanceUid"] == sop_uid(STUDY, 1, 1))
    assert current["Metadata"]["00080018"]["Value"] == [sop_uid(STUDY, 1, 1)]
    latest = requests.get(f"{tessera.root}/changefeed/latest", timeout=30).json()
    assert latest["Sequence"] == 5 and latest["State"] == "deleted"


def test_window_offset_and_limit(tessera: RunningTessera, changes: datetime) -> None:
    entries = feed(tessera, includeMetadata="false")
    deleted_at = entries[-1]["Timestamp"]
    window = feed(
        tessera, startTime=changes.isoformat(), endTime=deleted_at, includeMetadata="false"
    )
    assert [e["Sequence"] for e in window] == [1, 2, 3, 4]
    assert [e["Sequence"] for e in feed(tessera, offset="1", limit="2")] == [2, 3]
    assert [e["Sequence"] for e in feed(tessera, offset="5")] == []
    bad = requests.get(
        f"{tessera.root}/changefeed", params={"startTime": "2026-01-01T00:00:00"}, timeout=30
    )
    assert bad.status_code == 400 and "time zone" in bad.json()["reason"]


def test_webhook_retries_and_signs(
    tessera: RunningTessera, changes: datetime, receiver: Receiver
) -> None:
    deadline = time.monotonic() + 20
    while len(receiver.accepted()) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # and no duplicates follow
    accepted = receiver.accepted()
    assert sorted(int(h["Tessera-Sequence"]) for h, _, _ in accepted) == [1, 2, 3, 4, 5]
    with receiver.lock:
        first_headers, first_body, first_status = receiver.deliveries[0]
        attempts = [
            h["Tessera-Delivery-Attempt"]
            for h, _, _ in receiver.deliveries
            if h["Tessera-Sequence"] == first_headers["Tessera-Sequence"]
        ]
        everything = list(receiver.deliveries)
    assert first_status == 500 and attempts == ["1", "2"], "the refused delivery was retried"
    assert len(everything) == 6
    for headers, body, _ in everything:
        assert headers["Tessera-Signature"] == signature(SECRET, headers["Tessera-Timestamp"], body)
        entry = json.loads(body)
        assert entry["Sequence"] == int(headers["Tessera-Sequence"])
        assert entry["Action"] in ("create", "delete")
    assert json.loads(first_body)["StudyInstanceUid"] == study_uid(STUDY)


def test_data_dir_has_no_webhook_secret_in_logs(tessera: RunningTessera) -> None:
    log = Path(tessera.log_path).read_text(errors="replace")
    assert SECRET not in log
