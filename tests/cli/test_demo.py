"""`src.demo`: the page answers a digit drawn in a real browser (headless Chromium, Debian's package, driven by
Playwright's mouse), and malformed or oversized requests get a 4xx with a one-line JSON error while the server goes on
serving. The server runs in this process, on the shared tiny run's checkpoint, which reads the tiny font's digits."""

from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.demo import MAX_BODY, DemoServer
from src.mnist.predictor import CheckpointModel
from tests.helpers import FONT

CHROMIUM = shutil.which("chromium")
DIGITS = (0, 1, 4, 5)  # those the shared 2-epoch tiny run reads when drawn so, each by a clear margin
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def server(trained_run: Path) -> Iterator[DemoServer]:
    demo = DemoServer(CheckpointModel(trained_run / "checkpoints" / "last.ckpt"))
    thread = threading.Thread(target=demo.serve_forever, daemon=True)
    thread.start()
    yield demo
    demo.shutdown()
    demo.server_close()


def request(server: DemoServer, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    content = response.read()
    connection.close()
    return response.status, content


def png_data_url(grey: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b"{not json", None, 400, "the body is not JSON"),
        (b'{"image": 3}', None, 400, "no PNG"),
        (b'{"image": "data:image/png;base64,%%%"}', None, 400, "the image is not valid base64"),
        (json.dumps({"image": "data:image/png;base64," + base64.b64encode(b"GIF89a...").decode()}).encode(), None,
         400, "the image is not an image PIL can read"),
        (b"", {"Content-Length": str(MAX_BODY + 1)}, 413, f"over the {MAX_BODY:,} accepted"),
    ],
)  # fmt: skip
def test_a_malformed_request_is_a_4xx_with_one_line_and_the_server_goes_on(
    server: DemoServer, body: bytes, headers: dict | None, status: int, error: str
) -> None:
    got, content = request(server, "POST", "/predict", body, headers)
    answer = json.loads(content)
    assert got == status and error in answer["error"] and "\n" not in answer["error"]
    assert request(server, "GET", "/")[0] == 200, "the server still serves"
    assert request(server, "GET", "/nothing")[0] == 404


def test_a_blank_canvas_is_no_digit_and_a_glyph_its_digit(server: DemoServer) -> None:
    blank = json.dumps({"image": png_data_url(np.full((280, 280), 255))}).encode()
    status, content = request(server, "POST", "/predict", blank)
    assert status == 200 and json.loads(content) == {"digit": None, "probabilities": None}
    glyph = np.full((280, 280), 255)
    bitmap = np.kron([[int(ink) for ink in row] for row in FONT[1].split()], np.ones((30, 30)))
    glyph[35:245, 65:215][bitmap == 1] = 0
    status, content = request(server, "POST", "/predict", json.dumps({"image": png_data_url(glyph)}).encode())
    answer = json.loads(content)
    assert status == 200 and answer["digit"] == 1 and sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)


PEN = 24  # the page's pen width in canvas pixels: one glyph cell per pen width draws the glyph's bitmap


def glyph_strokes(glyph: str) -> list[list[tuple[float, float]]]:
    """Pen strokes (canvas points) that draw a tiny-font glyph (tests/helpers.py FONT) with the page's pen, one cell
    per pen width, in the canvas's middle: each run of ink cells along a row, then along a column (a lone cell is a
    dot). What the shared tiny run learned to read, drawn with the mouse."""
    rows = [[ink == "1" for ink in row] for row in glyph.split()]
    left, top = 140 - 2.5 * PEN, 140 - 3.5 * PEN
    at = lambda row, column: (left + (column + 0.5) * PEN, top + (row + 0.5) * PEN)  # noqa: E731
    columns = [list(column) for column in zip(*rows, strict=True)]
    runs = [[at(r, first), at(r, last)] for r, line in enumerate(rows) for first, last in ink_runs(line)]
    return runs + [[at(first, c), at(last, c)] for c, line in enumerate(columns) for first, last in ink_runs(line)]


def ink_runs(line: list[bool]) -> list[tuple[int, int]]:
    """(first, last) index of each run of consecutive True."""
    runs, start = [], None
    for index, ink in enumerate([*line, False]):
        if ink and start is None:
            start = index
        elif not ink and start is not None:
            runs.append((start, index - 1))
            start = None
    return runs


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium); .ci/run installs it")
def test_digits_drawn_with_the_mouse_are_read_in_a_real_browser(server: DemoServer) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
    url = "http://{}:{}/".format(*server.server_address[:2])
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        box = page.locator("#canvas").bounding_box()
        origin = (box["x"] + 2, box["y"] + 2)  # inside the canvas's 2 px border
        for digit in DIGITS:
            page.click("#clear")
            sync_api.expect(page.locator("#digit")).to_have_text("no digit")
            for (x0, y0), (x1, y1) in glyph_strokes(FONT[digit]):
                page.mouse.move(origin[0] + x0, origin[1] + y0)
                page.mouse.down()
                page.mouse.move(origin[0] + x1, origin[1] + y1, steps=2)
                page.mouse.up()
            sync_api.expect(page.locator("#digit")).to_have_text(str(digit), timeout=10_000)
            assert page.locator("#error").text_content() == ""
        browser.close()
