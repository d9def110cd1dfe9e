"""End to end: ``tessera upload``, ``search`` and ``download`` (as a user runs them, in a
subprocess without a terminal) against the whole system.

A directory of pydicom's files, with pydicom's truncated files and a text file mixed in, is
uploaded; the summary counts them; search finds the studies; download returns the stored
bytes. Then all of shared/testdata is uploaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import data_store
import pydicom
import pydicom.data
import pytest
from tests.support.dicom_files import SHARED_TESTDATA, TRUNCATED, DicomFile, shared_files
from tests.support.system import RunningTessera, start_tessera
from typer.testing import CliRunner

from tessera.cli import app

pytestmark = pytest.mark.slow

TESSERA = Path(sys.executable).parent / "tessera"
FOLDERS = (
    Path(pydicom.data.__file__).parent / "test_files",
    Path(data_store.__file__).parent / "data",
)
GOOD = (
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_rle.dcm",
    "image_dfl.dcm",
    "liver_1frame.dcm",
    "reportsi.dcm",
    "rtdose.dcm",
    "rtplan.dcm",
    "SC_rgb_small_odd.dcm",
    "waveform_ecg.dcm",
    "emri_small.dcm",
)
"""pydicom files with distinct SOP Instance UIDs: CT, MR, compressed, SR, RT, waveform."""


@dataclass(frozen=True)
class UploadTree:
    root: Path
    good: list[DicomFile]
    """Storable files with distinct SOP Instance UIDs, by their copies under ``root``."""
    broken: int
    not_dicom: int


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(tmp_path_factory.mktemp("upload-cli") / "data")
    yield running
    assert running.stop() == 0, running.log_tail()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> UploadTree:
    root = tmp_path_factory.mktemp("upload-tree")
    (root / "nested").mkdir()
    good = []
    for index, name in enumerate(GOOD):
        target = root / ("nested" if index % 2 else ".") / f"{index:02d}-{name}"
        shutil.copy(find(name), target)
        good.append(describe(target))
    assert len({f.sop_uid for f in good}) == len(good)
    for name in TRUNCATED:
        shutil.copy(find(name), root / "nested" / f"broken-{name}")
    (root / "nested" / "notes.txt").write_text("a text file that is not DICOM\n" * 20)
    shutil.copy(find("rtstruct.dcm"), root / "bare-data-set.dcm")  # DICOM without a preamble
    return UploadTree(root, good, broken=len(TRUNCATED), not_dicom=2)


def find(name: str) -> Path:
    return next(folder / name for folder in FOLDERS if (folder / name).is_file())


def describe(path: Path) -> DicomFile:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return DicomFile(
        path,
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.SOPInstanceUID),
        str(ds.SOPClassUID),
        str(ds.file_meta.TransferSyntaxUID),
    )


def tessera_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The ``tessera`` command as a user runs it, its output going to pipes (no terminal)."""
    return subprocess.run(
        [str(TESSERA), *arguments], capture_output=True, text=True, timeout=120, check=False
    )


def in_process(*arguments: str) -> subprocess.CompletedProcess[str]:
    """The command run by the test process itself (no interpreter start-up to wait for)."""
    runner = CliRunner(env=dict.fromkeys(("TESSERA_URL", "TESSERA_TOKEN", "TESSERA_API_KEY")))
    result = runner.invoke(app, list(arguments))
    return subprocess.CompletedProcess(arguments, result.exit_code, result.stdout, result.stderr)


def summary(stdout: str) -> dict[str, int]:
    rows: dict[str, int] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            rows[cells[0]] = int(cells[1])
    return rows


@pytest.fixture(scope="module")
def uploaded(tessera: RunningTessera, tree: UploadTree) -> subprocess.CompletedProcess[str]:
    return tessera_command(
        "upload", str(tree.root), "--url", tessera.root, "--batch", "5", "--concurrency", "3"
    )


def test_upload_counts_every_file(
    uploaded: subprocess.CompletedProcess[str], tree: UploadTree
) -> None:
    assert uploaded.returncode == 1, uploaded.stdout + uploaded.stderr
    rows = summary(uploaded.stdout)
    assert rows["stored"] + rows["stored with warnings"] == len(tree.good), uploaded.stdout
    assert rows["failed"] == tree.broken
    assert rows["C000H Cannot understand"] == tree.broken
    assert rows["skipped"] == tree.not_dicom
    assert rows["duplicates (already stored)"] == 0
    for name in TRUNCATED:
        assert f"broken-{name}: C000H Cannot understand" in uploaded.stdout
    assert f"{len(tree.good)} of {len(tree.good) + tree.broken} files stored" in uploaded.stdout
    assert "\x1b[" not in uploaded.stdout + uploaded.stderr  # no terminal, no escape codes


def test_search_finds_the_studies(
    tessera: RunningTessera, tree: UploadTree, uploaded: subprocess.CompletedProcess[str]
) -> None:
    found = in_process("search", "--url", tessera.root, "--format", "json")
    assert found.returncode == 0, found.stderr
    studies = {m["0020000D"]["Value"][0] for m in json.loads(found.stdout)}
    assert {f.study_uid for f in tree.good} <= studies

    study = tree.good[0].study_uid
    instances = in_process(
        "search", "instances", "--study", study, "--url", tessera.root, "--format", "json"
    )
    assert instances.returncode == 0, instances.stderr
    sop_uids = {m["00080018"]["Value"][0] for m in json.loads(instances.stdout)}
    assert {f.sop_uid for f in tree.good if f.study_uid == study} <= sop_uids

    table = in_process("search", "--url", tessera.root, "-q", f"StudyInstanceUID={study}")
    assert table.returncode == 0, table.stderr
    assert study in table.stdout and "1 study" in table.stderr


def test_download_is_byte_exact(
    tessera: RunningTessera,
    tree: UploadTree,
    uploaded: subprocess.CompletedProcess[str],
    tmp_path: Path,
) -> None:
    f = tree.good[1]
    got = in_process(
        "download",
        f.study_uid,
        f.series_uid,
        f.sop_uid,
        "--out",
        str(tmp_path),
        "--url",
        tessera.root,
    )
    assert got.returncode == 0, got.stderr
    written = tmp_path / f"{f.sop_uid}.dcm"
    assert hashlib.sha256(written.read_bytes()).hexdigest() == f.sha256


def test_download_a_study_and_resume(
    tessera: RunningTessera,
    tree: UploadTree,
    uploaded: subprocess.CompletedProcess[str],
    tmp_path: Path,
) -> None:
    study = tree.good[0].study_uid
    expected = {f.sop_uid: f.sha256 for f in tree.good if f.study_uid == study}
    got = in_process("download", study, "--out", str(tmp_path), "--url", tessera.root)
    assert got.returncode == 0, got.stderr
    written = {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert written == expected

    resume = ("download", study, "--out", str(tmp_path), "--url", tessera.root, "--skip-existing")
    nothing_to_do = in_process(*resume)
    assert nothing_to_do.returncode == 0, nothing_to_do.stderr
    assert nothing_to_do.stdout.startswith(f"0 files (0 bytes) written to {tmp_path}; ")
    assert f"{len(expected)} already there" in nothing_to_do.stdout

    first = tmp_path / f"{tree.good[0].sop_uid}.dcm"
    first.unlink()
    again = in_process(*resume)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("1 file (")
    assert hashlib.sha256(first.read_bytes()).hexdigest() == expected[first.stem]


def test_upload_shared_testdata(tessera: RunningTessera) -> None:
    every_file = [p for p in SHARED_TESTDATA.rglob("*") if p.is_file()]
    done = tessera_command("upload", str(SHARED_TESTDATA), "--url", tessera.root)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = summary(done.stdout)
    assert rows["stored"] + rows["stored with warnings"] == len(shared_files())
    assert rows["failed"] == 0
    assert rows["skipped"] == len(every_file) - len(shared_files())


def test_upload_refuses_a_server_that_is_not_there(tree: UploadTree) -> None:
    done = tessera_command(
        "upload", str(tree.good[0].path), "--url", "http://127.0.0.1:9/dicom-web", "--retries", "1"
    )
    assert done.returncode == 1
    assert summary(done.stdout)["failed"] == 1
