"""OHIF in a real browser, served by Tessera at ``/viewer`` (issue 9, docs/OHIF.md).

Tessera runs whole (``tessera serve``) with ``TESSERA_VIEWER_DIR`` pointing at the pinned
``@ohif/app`` build; a synthetic five-slice CT series (and the conformant WSI pyramid of the
shared test data) is stored with STOW-RS; then headless Chromium, driven by playwright-core
from ``ohif.mjs``, checks that the study list shows the patient, that the CT viewer draws an
image (a canvas with many grey levels; screenshot in ``tests/browser/artifacts/``) and that the
microscopy mode draws the slide.

What the test needs is installed by the project's scripts, once (cached in ``.tools/``):
``scripts/install-viewer.sh`` (OHIF) and ``scripts/install-browser.sh`` (Debian ``chromium`` and
the Node driver). The test skips only when those cannot reach the npm registry or the Debian
archive (exit status 3); any other install failure fails it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from tests.support.dicom_files import SHARED_TESTDATA
from tests.support.http import stow
from tests.support.system import RunningTessera, start_tessera

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DRIVER = Path(__file__).resolve().parent / "ohif.mjs"
UNREACHABLE = 3
INSTALL_TIMEOUT = 900
PATIENT_NAME = "TESSERA^OHIF"
STUDY_UID = "1.2.826.0.1.3680043.8.498.7001"
BROWSER_WAIT_MS = 60_000
WSI = SHARED_TESTDATA / "wsi-conformant"


@dataclass(frozen=True)
class BrowserTools:
    viewer_dir: Path
    chromium: str
    node_modules: str


def _install(script: str) -> list[str]:
    """Run an install script; skip when it cannot reach its registry, fail otherwise."""
    try:
        done = subprocess.run(
            [str(REPO / "scripts" / script)],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/{script} took more than {INSTALL_TIMEOUT} s")
    if done.returncode == UNREACHABLE:
        pytest.skip(f"scripts/{script}: registry unreachable: {done.stderr.strip()[-500:]}")
    if done.returncode != 0:
        pytest.fail(f"scripts/{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.split()


@pytest.fixture(scope="module")
def tools() -> BrowserTools:
    if shutil.which("node") is None:
        pytest.fail("node (Node.js 20+) is needed for the browser tests: apt-get install nodejs")
    (viewer_dir,) = _install("install-viewer.sh")
    chromium, node_modules = _install("install-browser.sh")
    return BrowserTools(Path(viewer_dir), chromium, node_modules)


def _ct_series() -> list[bytes]:
    """Five 256x256 CT slices of a synthetic phantom (a disc with a gradient and two inserts)."""
    series_uid = generate_uid()
    yy, xx = np.mgrid[-128:128, -128:128].astype(np.float64)
    slices = []
    for index in range(5):
        radius = np.hypot(yy, xx)
        pixels = np.where(radius < 110, 40 + xx * 2 + yy, -1000.0)
        pixels[np.hypot(yy - 40, xx + 30) < 18 + index] = 700  # bone-like insert
        pixels[np.hypot(yy + 35, xx - 35) < 14] = -500  # air-like insert
        stored = np.clip(pixels + 1024, 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = STUDY_UID
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = STUDY_UID + ".1"
        ds.PatientName = PATIENT_NAME
        ds.PatientID = "OHIF-1"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = "20240102"
        ds.StudyTime = ds.SeriesTime = "101500"
        ds.StudyID = "1"
        ds.AccessionNumber = "A1"
        ds.StudyDescription = "OHIF browser test"
        ds.SeriesDescription = "Synthetic CT"
        ds.Modality = "CT"
        ds.SeriesNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-128.0, -128.0, float(index * 2)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.0
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = stored.tobytes()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        slices.append(buffer.getvalue())
    return slices


@pytest.fixture(scope="module")
def tessera(
    tools: BrowserTools, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningTessera]:
    env = {"TESSERA_VIEWER_DIR": str(tools.viewer_dir), "TESSERA_RENDER_WORKERS": "1"}
    running = start_tessera(tmp_path_factory.mktemp("ohif"), env=env)
    try:
        stored = stow(running.root, _ct_series())
        assert stored.status_code == 200, stored.text
        yield running
    finally:
        running.stop()


def _run_driver(
    tools: BrowserTools, tessera: RunningTessera, checks: list[dict[str, object]]
) -> dict[str, object]:
    job = {
        "chromium": tools.chromium,
        "modules": tools.node_modules,
        "base": tessera.health_root,
        "timeoutMs": BROWSER_WAIT_MS,
        "checks": checks,
    }
    budget = 30 + len(checks) * 3 * BROWSER_WAIT_MS / 1000
    done = subprocess.run(
        ["node", str(DRIVER), json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=budget,
        cwd=REPO,
    )
    if done.returncode != 0 or not done.stdout.strip():
        pytest.fail(f"the browser driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    for line in report["failedRequests"]:  # type: ignore[attr-defined]
        print("request answered badly:", line)
    return report


def _explain(report: dict[str, object]) -> str:
    lines = ["browser console:", *map(str, report["console"])]  # type: ignore[call-overload]
    lines += ["failed requests:", *map(str, report["failedRequests"])]  # type: ignore[call-overload]
    return "\n".join(lines[-200:])


def _grey_levels(png: Path) -> int:
    """Distinct grey levels in the screenshot's central region (where the viewport is)."""
    with Image.open(png) as image:
        width, height = image.size
        centre = image.convert("L").crop((width // 3, height // 4, 2 * width // 3, 3 * height // 4))
        return len(np.unique(np.asarray(centre)))


def test_ohif_study_list_and_ct_viewer(tools: BrowserTools, tessera: RunningTessera) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "ohif-ct.png"
    started = time.monotonic()
    report = _run_driver(
        tools,
        tessera,
        [
            {
                "name": "study list",
                "path": "/viewer/",
                "texts": ["TESSERA, OHIF", "OHIF browser test"],
            },
            {
                "name": "CT viewer",
                "path": f"/viewer/viewer?StudyInstanceUIDs={STUDY_UID}",
                "screenshot": str(screenshot),
                "selector": "canvas.cornerstone-canvas, .cornerstone-viewport-element canvas",
                "minLevels": 16,
            },
        ],
    )
    print(f"OHIF CT screenshot: {screenshot} ({time.monotonic() - started:.1f} s in the browser)")
    results = {result["name"]: result for result in report["results"]}  # type: ignore[attr-defined]
    for name, result in results.items():
        assert result["ok"], f"{name}: {result.get('error')}\n{_explain(report)}"
    assert _grey_levels(screenshot) >= 16, _explain(report)


def _mean_colour(png: Path) -> tuple[float, float, float]:
    """Mean R, G, B of the screenshot's central region (inside the slide viewport)."""
    with Image.open(png) as image:
        width, height = image.size
        centre = image.convert("RGB").crop(
            (width // 3, height // 4, 2 * width // 3, 3 * height // 4)
        )
        red, green, blue = np.asarray(centre, dtype=np.float64).reshape(-1, 3).mean(axis=0)
        return float(red), float(green), float(blue)


def _green_dominant(colour: tuple[float, float, float], margin: float = 20.0) -> bool:
    red, green, blue = colour
    return green > red + margin and green > blue + margin


def _recoded_pyramid(files: list[Path]) -> list[bytes]:
    """The pyramid with its tiles re-encoded so that they say what they hold.

    The converter that made ``wsi/`` wrote R, G and B samples into JPEG components that the
    codestream declares Y, Cb and Cr (JFIF APP0, component ids 1-3, no Adobe APP14), and
    Photometric Interpretation says YBR_FULL_422 as well: every conformant decoder (libjpeg-turbo
    in the viewer, Pillow, pydicom) therefore draws the slide green. Reading the components
    without colour conversion (Pillow's ``draft("YCbCr")``) gives the RGB samples back, and
    encoding them as a JFIF JPEG (YCbCr 4:2:2) gives tiles that match YBR_FULL_422. New UIDs,
    so that the copy is a study of its own.
    """
    new_uids: dict[str, str] = {}
    recoded = []
    for path in files:
        ds = pydicom.dcmread(path)
        frames = []
        for tile in generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)):
            with Image.open(io.BytesIO(tile)) as image:
                image.draft("YCbCr", image.size)  # the components as stored: R, G, B
                rgb = Image.fromarray(np.asarray(image), mode="RGB")
            out = io.BytesIO()
            rgb.save(out, format="JPEG", quality=90, subsampling=1)  # 1: 4:2:2
            frames.append(out.getvalue())
        ds.PixelData = encapsulate(frames, has_bot=True)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            old = str(ds.data_element(keyword).value)
            setattr(ds, keyword, new_uids.setdefault(old, generate_uid()))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDescription = "WSI test, tiles re-encoded as YCbCr"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        recoded.append(buffer.getvalue())
    return recoded


def _frame_answers(report: dict[str, object]) -> set[str]:
    """The media types (``type`` of the multipart answer) the slide's tiles came in."""
    found = set()
    for entry in report["dicomweb"]:  # type: ignore[attr-defined]
        if "/frames/" in entry["path"]:
            content_type = entry["contentType"]
            found.add(
                content_type.split("type=")[1].split(";")[0].strip('"')
                if "type=" in content_type
                else content_type
            )
    return found


@pytest.mark.skipif(not WSI.is_dir(), reason="shared/testdata/wsi-conformant is not present")
def test_ohif_microscopy_mode(tools: BrowserTools, tessera: RunningTessera) -> None:
    """The microscopy mode draws the pyramid from the stored JPEG tiles, in their colours.

    dicom-microscopy-viewer asks for each tile with JPEG-LS, JPEG 2000, octet-stream and
    ``image/jpeg`` at equal weight: Tessera must send the stored JPEG (no transcode). The shared
    pyramid's tiles are green as stored (see ``_recoded_pyramid``), so the colour is checked on
    a copy whose tiles are encoded correctly: it must not come out green.
    """
    files = sorted(WSI.glob("*.dcm"))
    stored = stow(tessera.root, [path.read_bytes() for path in files])
    assert stored.status_code == 200, stored.text
    recoded = _recoded_pyramid(files)
    stored = stow(tessera.root, recoded)
    assert stored.status_code == 200, stored.text
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    recoded_uid = str(
        pydicom.dcmread(io.BytesIO(recoded[0]), stop_before_pixels=True).StudyInstanceUID
    )
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "ohif-microscopy.png"
    recoded_screenshot = ARTIFACTS / "ohif-microscopy-recoded.png"
    check = {"selector": ".DicomMicroscopyViewer canvas, canvas", "minLevels": 16, "settleMs": 3000}
    report = _run_driver(
        tools,
        tessera,
        [
            {
                "name": "microscopy",
                "path": f"/viewer/microscopy?StudyInstanceUIDs={study_uid}",
                "screenshot": str(screenshot),
                **check,
            },
            {
                "name": "microscopy, tiles re-encoded",
                "path": f"/viewer/microscopy?StudyInstanceUIDs={recoded_uid}",
                "screenshot": str(recoded_screenshot),
                **check,
            },
        ],
    )
    requests_log = ARTIFACTS / "ohif-microscopy-requests.json"
    requests_log.write_text(json.dumps(report["dicomweb"], indent=1))
    print(f"OHIF microscopy screenshots: {screenshot}, {recoded_screenshot}")
    print(f"DICOMweb requests of the microscopy mode: {requests_log}")
    for result in report["results"]:  # type: ignore[attr-defined]
        assert result["ok"], f"{result['name']}: {result.get('error')}\n{_explain(report)}"
    assert _frame_answers(report) == {"image/jpeg"}, requests_log.read_text()[:3000]
    colour = _mean_colour(recoded_screenshot)
    print(f"mean colour of the slide: {colour} (as stored: {_mean_colour(screenshot)})")
    assert not _green_dominant(colour), f"the re-encoded slide is drawn green: {colour}"


def test_viewer_files_are_served_relocated(tools: BrowserTools, tessera: RunningTessera) -> None:
    """The served build: relocated index.html, generated config, MIME types, SPA fallback."""
    base = tessera.health_root
    index = requests.get(f"{base}/viewer/", timeout=10)
    assert index.status_code == 200
    assert index.headers["Content-Type"].startswith("text/html")
    assert 'window.PUBLIC_URL="/viewer/"' in index.text
    assert 'src="/viewer/app-config.js"' in index.text
    config = requests.get(f"{base}/viewer/app-config.js", timeout=10)
    assert config.headers["Content-Type"].startswith("text/javascript")
    assert f'"qidoRoot": "{tessera.root}"' in config.text
    assert requests.get(f"{base}/viewer/viewer/anything", timeout=10).text == index.text
    assert requests.get(f"{base}/viewer/missing.js", timeout=10).status_code == 404
    wasm = sorted(tools.viewer_dir.glob("*.wasm"))[0].name
    response = requests.get(f"{base}/viewer/{wasm}", timeout=30)
    assert response.headers["Content-Type"] == "application/wasm"
    assert "immutable" in response.headers["Cache-Control"]
