"""Kill -9 the store service in the middle of a STOW batch (ARCHITECTURE invariants 2 and 8).

No partial instance may become visible: whatever QIDO shows is retrievable byte-exact. The
supervisor restarts the store, and repeating the STOW then stores everything.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from tests.support.http import retrieve_parts, stow
from tests.support.system import RunningTessera, start_tessera

from bench.synthetic import ct_series

pytestmark = pytest.mark.slow
COUNT = 300


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(
        tmp_path_factory.mktemp("kill") / "data", env={"TESSERA_REQUEST_TIMEOUT": "5"}
    )
    yield running
    assert running.stop() == 0, running.log_tail()


def _visible_sops(root: str, study_uid: str) -> set[str]:
    response = requests.get(
        f"{root}/studies/{study_uid}/instances", params={"limit": 10000}, timeout=30
    )
    if response.status_code == 204:
        return set()
    response.raise_for_status()
    return {item["00080018"]["Value"][0] for item in response.json()}


def test_store_killed_during_stow(tessera: RunningTessera) -> None:
    instances = list(ct_series(COUNT, seed=11, rows=128, columns=128))
    study_uid = instances[0].study_uid
    by_sop = {i.sop_uid: hashlib.sha256(i.data).hexdigest() for i in instances}
    store_pid = tessera.child_pids()["store"]
    result: dict[str, requests.Response] = {}
    sender = threading.Thread(
        target=lambda: result.update(first=stow(tessera.root, [i.data for i in instances]))
    )
    sender.start()
    deadline = time.monotonic() + 120
    while not _visible_sops(tessera.root, study_uid):
        assert time.monotonic() < deadline, "ingest never started"
        time.sleep(0.01)
    os.kill(store_pid, signal.SIGKILL)
    visible_at_kill = len(_visible_sops(tessera.root, study_uid))
    sender.join(timeout=300)
    assert visible_at_kill < COUNT, "the batch finished before the kill; test inconclusive"
    assert result["first"].status_code in {200, 202, 409}, result["first"].text

    # Whatever is visible is complete and byte-exact.
    visible = _visible_sops(tessera.root, study_uid)
    for sop in visible:
        series_uid = instances[0].series_uid
        url = f"{tessera.root}/studies/{study_uid}/series/{series_uid}/instances/{sop}"
        ((_, data),) = retrieve_parts(url)
        assert hashlib.sha256(data).hexdigest() == by_sop[sop]

    # The supervisor restarted the store; the same STOW now succeeds for every instance.
    deadline = time.monotonic() + 60
    while tessera.child_pids().get("store") in (None, store_pid):
        assert time.monotonic() < deadline, "store was not restarted"
        time.sleep(0.2)
    tessera.wait_ready()
    again = stow(tessera.root, [i.data for i in instances])
    assert again.status_code == 200, again.text
    assert _visible_sops(tessera.root, study_uid) == set(by_sop)
    leftovers = list((tessera.data_dir / "objects" / "incoming").glob("*"))
    assert leftovers == []
