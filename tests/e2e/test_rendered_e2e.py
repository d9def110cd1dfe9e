"""End to end: rendered and thumbnail resources (PS3.18 §10.4) with two render workers.

The whole system runs as processes (``tessera serve`` with ``TESSERA_RENDER_WORKERS=2``). The
rendered pixels of a CT are compared with a numpy reference of the PS3.3 C.11.2.1.2 window
formula applied to pydicom's pixels; every level (study, series, instance, frames) and media
type (JPEG, PNG, animated GIF, video passthrough) is requested; bad parameters are 400s with a
reason; the work is spread over both render processes and images asked for again are cached.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.data import get_testdata_file
from tests.support.dicom_files import DicomFile, shared_files
from tests.support.http import stow
from tests.support.system import RunningTessera, start_tessera

from tessera_gateway.mediatype import parse_content_type
from tessera_gateway.multipart import iter_parts

pytestmark = pytest.mark.slow

CT = Path(get_testdata_file("CT_small.dcm"))  # signed 16-bit, Rescale Intercept
MR = Path(get_testdata_file("MR_small.dcm"))
RGB = Path(get_testdata_file("SC_rgb.dcm"))
MULTIFRAME = Path(get_testdata_file("emri_small.dcm"))  # 10 frames, MONOCHROME2
PALETTE = Path(get_testdata_file("OBXXXX1A.dcm"))  # PALETTE COLOR


def _shared(folder: str, transfer_syntax: str | None = None) -> DicomFile:
    for item in shared_files():
        if item.path.parent.name == folder and transfer_syntax in (None, item.transfer_syntax_uid):
            return item
    raise LookupError(folder)


VIDEO = _shared("video", "1.2.840.10008.1.2.4.102")
PDF = _shared("pdf")
FILES = [CT, MR, RGB, MULTIFRAME, PALETTE, VIDEO.path, PDF.path]


def _uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


@pytest.fixture(scope="module")
def tessera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTessera]:
    running = start_tessera(
        tmp_path_factory.mktemp("rendered"), env={"TESSERA_RENDER_WORKERS": "2"}
    )
    try:
        response = stow(running.root, [path.read_bytes() for path in FILES])
        assert response.status_code == 200, response.text
        yield running
    finally:
        running.stop()


def _url(tessera: RunningTessera, path: Path, suffix: str) -> str:
    study, series, sop = _uids(path)
    return f"{tessera.root}/studies/{study}/series/{series}/instances/{sop}/{suffix}"


def _image(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def _reference_window(path: Path, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) on the modality values, 8-bit output."""
    ds = pydicom.dcmread(path)
    x = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    y = np.where(x <= low, 0, np.where(x > high, 255, y))
    return np.asarray(y)


def test_png_matches_the_window_formula(tessera: RunningTessera) -> None:
    url = _url(tessera, CT, "rendered")
    image = _image(
        requests.get(url, params={"window": "40,400,linear"}, headers={"Accept": "image/png"})
    )
    assert image.mode == "L"
    got = np.asarray(image, dtype=np.float64)
    expected = _reference_window(CT, 40, 400)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0


def test_default_rendering_is_a_jpeg_of_the_whole_image(tessera: RunningTessera) -> None:
    response = requests.get(_url(tessera, MR, "rendered"))
    assert response.headers["Content-Type"] == "image/jpeg"
    image = _image(response)
    ds = pydicom.dcmread(MR, stop_before_pixels=True)
    assert image.size == (ds.Columns, ds.Rows)
    assert np.asarray(image).std() > 5  # an image, not a blank


@pytest.mark.parametrize(
    ("query", "size"),
    [
        ("viewport=32,32", (32, 32)),
        ("viewport=64,32", (32, 32)),
        ("viewport=100,100,0,0,64,32", (100, 50)),
    ],
    ids=["fit", "aspect-kept", "region"],
)
def test_viewport_sizes(tessera: RunningTessera, query: str, size: tuple[int, int]) -> None:
    response = requests.get(_url(tessera, CT, "rendered") + "?" + query + "&accept=image/png")
    assert _image(response).size == size


def test_colour_and_palette_render_in_colour(tessera: RunningTessera) -> None:
    for path in (RGB, PALETTE):
        image = _image(
            requests.get(_url(tessera, path, "rendered"), headers={"Accept": "image/png"})
        )
        assert image.mode == "RGB", path.name
        pixels = np.asarray(image).reshape(-1, 3).astype(int)
        assert (np.abs(pixels[:, 0] - pixels[:, 1]) > 8).any(), path.name


def test_multiframe_as_animated_gif_and_frames(tessera: RunningTessera) -> None:
    gif = _image(
        requests.get(_url(tessera, MULTIFRAME, "rendered"), headers={"Accept": "image/gif"})
    )
    assert getattr(gif, "n_frames", 1) == 10
    two = requests.get(
        _url(tessera, MULTIFRAME, "frames/2,3/rendered"), headers={"Accept": "image/gif"}
    )
    assert getattr(_image(two), "n_frames", 1) == 2
    multipart = requests.get(_url(tessera, MULTIFRAME, "frames/2,3/rendered"))
    assert multipart.status_code == 200
    content_type = parse_content_type(multipart.headers["Content-Type"])
    assert content_type.essence == "multipart/related"
    assert content_type.params["type"] == "image/jpeg"
    parts = list(iter_parts(multipart.content, content_type.params["boundary"]))
    assert len(parts) == 2
    first = Image.open(io.BytesIO(parts[0][1]))
    assert first.format == "JPEG"
    one = _image(requests.get(_url(tessera, MULTIFRAME, "frames/10/rendered")))
    assert one.format == "JPEG"


def test_series_and_study_rendered_are_multipart(tessera: RunningTessera) -> None:
    study, series, _ = _uids(CT)
    response = requests.get(f"{tessera.root}/studies/{study}/series/{series}/rendered")
    assert response.status_code == 200, response.text
    boundary = parse_content_type(response.headers["Content-Type"]).params["boundary"]
    parts = list(iter_parts(response.content, boundary))
    assert len(parts) >= 1
    for headers, body in parts:
        assert Image.open(io.BytesIO(body)).format == "JPEG"
        assert headers["content-location"].endswith("/rendered")
        assert "/frames/" not in headers["content-location"]


@pytest.mark.parametrize("level", ["study", "series", "instance", "frames"])
def test_thumbnails_at_every_level(tessera: RunningTessera, level: str) -> None:
    study, series, sop = _uids(MULTIFRAME)
    base = f"{tessera.root}/studies/{study}"
    url = {
        "study": f"{base}/thumbnail",
        "series": f"{base}/series/{series}/thumbnail",
        "instance": f"{base}/series/{series}/instances/{sop}/thumbnail",
        "frames": f"{base}/series/{series}/instances/{sop}/frames/4/thumbnail",
    }[level]
    image = _image(requests.get(url))
    assert image.format == "JPEG"
    assert max(image.size) <= 128


def test_video_is_served_as_stored(tessera: RunningTessera) -> None:
    url = _url(tessera, VIDEO.path, "rendered")
    response = requests.get(url, headers={"Accept": "video/mp4"})
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("video/mp4")
    assert len(response.content) > 1000
    assert requests.get(url, headers={"Accept": "image/jpeg"}).status_code == 406


BAD = [
    ("window=40", 400),
    ("window=40,0", 400),
    ("window=a,b", 400),
    ("viewport=0,10", 400),
    ("viewport=10", 400),
    ("quality=0", 400),
    ("quality=1000", 400),
    ("iccprofile=cmyk", 400),
    ("annotation=everything", 400),
    ("accept=text/html", 406),
    ("quality=50&quality=60", 400),
]


@pytest.mark.parametrize(("query", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_parameters(tessera: RunningTessera, query: str, status: int) -> None:
    response = requests.get(_url(tessera, CT, "rendered") + "?" + query)
    assert response.status_code == status, response.text
    assert response.text  # a reason


def test_what_cannot_be_rendered(tessera: RunningTessera) -> None:
    assert requests.get(_url(tessera, PDF.path, "rendered")).status_code == 406
    assert requests.get(_url(tessera, MULTIFRAME, "frames/11/rendered")).status_code == 400
    study, series, _ = _uids(CT)
    missing = f"{tessera.root}/studies/{study}/series/{series}/instances/1.2.3.4/rendered"
    assert requests.get(missing).status_code == 404
    assert requests.get(f"{tessera.root}/studies/1.2.x/rendered").status_code == 400


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def test_two_workers_share_the_work_and_results_are_cached(tessera: RunningTessera) -> None:
    """Both render processes work; an image asked for once is not cached (a window drag asks
    for each image once), one asked for again is: three requests for an image reach one of
    the two processes twice."""
    pids = {name: pid for name, pid in tessera.child_pids().items() if name.startswith("render")}
    assert set(pids) == {"render", "render-2"}
    before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
    url = _url(tessera, CT, "rendered")
    derived = tessera.data_dir / "objects" / "derived"
    cached_before = len(list(derived.rglob("*.jpg")))
    started = time.monotonic()
    for center in range(60):
        response = requests.get(url, params={"window": f"{center},300", "viewport": "256,256"})
        assert response.status_code == 200
    elapsed = time.monotonic() - started
    used = {name: _cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    assert all(seconds > 0.02 for seconds in used.values()), used
    assert len(list(derived.rglob("*.jpg"))) == cached_before
    for center in range(20):
        for _ in range(3):
            params = {"window": f"{center},300", "viewport": "256,256"}
            assert requests.get(url, params=params).status_code == 200
    time.sleep(0.5)  # written after the answer
    assert len(list(derived.rglob("*.jpg"))) == cached_before + 20
    again = time.monotonic()
    assert requests.get(url, params={"window": "5,300", "viewport": "256,256"}).status_code == 200
    assert time.monotonic() - again < elapsed / 10 + 0.05
