"""`python -m src.demo onnx=model.onnx` (or `ckpt_path=...`; `make demo ARGS=...`): a page to draw a digit on, served
on http://127.0.0.1:8000/ by the standard library's threading HTTP server. The page posts the canvas as a PNG to
/predict whenever the drawing changes; the answer is the digit and the ten probabilities (or no digit), found as
`src.predict` finds them (`to_mnist`, then the model). Requests are size-capped and checked: a malformed one gets a
4xx with a one-line JSON error, and the server goes on serving. Local only unless host= says otherwise."""

from __future__ import annotations

import base64
import binascii
import html
import io
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from src.core.args import key_values
from src.core.errors import UserError, exit_line
from src.core.serve import serve_until_interrupted
from src.mnist.images import read_image
from src.mnist.predictor import Model, open_model, predict_picture

PAGE = Path(__file__).with_name("demo.html")
KEYS = {"onnx": None, "ckpt_path": None, "host": "127.0.0.1", "port": "8000"}
MAX_BODY = 512 * 1024  # the page's 280×280 canvas is a few KB as PNG
MAX_PIXELS = 1024 * 1024
PNG_DATA_URL = "data:image/png;base64,"
EXPECTED = '{"image": "data:image/png;base64,..."}'


class Refused(Exception):
    """A request the server answers with a 4xx and this one-line reason."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def answer(model: Model, body: bytes) -> dict:
    """The prediction for a request body `{"image": "data:image/png;base64,..."}`."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Refused(HTTPStatus.BAD_REQUEST, f"the body is not JSON; send {EXPECTED}") from None
    image = request.get("image") if isinstance(request, dict) else None
    if not isinstance(image, str) or not image.startswith(PNG_DATA_URL):
        raise Refused(HTTPStatus.BAD_REQUEST, f"no PNG: send {EXPECTED}")
    try:
        png = base64.b64decode(image.removeprefix(PNG_DATA_URL), validate=True)
    except (binascii.Error, ValueError):
        raise Refused(HTTPStatus.BAD_REQUEST, "the image is not valid base64") from None
    try:
        grey = read_image(io.BytesIO(png), "the image", max_pixels=MAX_PIXELS, formats=("PNG",))
    except UserError as error:
        raise Refused(HTTPStatus.BAD_REQUEST, str(error)) from None
    prediction = predict_picture(model, grey)
    return {"digit": prediction.digit, "probabilities": prediction.probabilities}


class Handler(BaseHTTPRequestHandler):
    server: DemoServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path not in ("/", "/index.html"):
            self.send_json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path[:80]}; the page is /"})
            return
        self.send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8")

    def do_POST(self) -> None:  # noqa: N802
        try:
            if self.path != "/predict":
                raise Refused(HTTPStatus.NOT_FOUND, f"no endpoint {self.path[:80]}; POST to /predict")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise Refused(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
            if int(length) > MAX_BODY:
                raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"{length} bytes, over the {MAX_BODY:,} accepted")
            self.send_json(HTTPStatus.OK, answer(self.server.model, self.rfile.read(int(length))))
        except Refused as refused:
            self.close_connection = True  # an unread body must not be taken for the next request
            self.send_json(refused.status, {"error": str(refused)})

    def send_json(self, status: HTTPStatus, content: dict) -> None:
        self.send(status, json.dumps(content).encode(), "application/json")

    def send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        """Quiet: a live page posts on every stroke."""


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model: Model, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), Handler)
        self.model = model
        self.page = PAGE.read_text().replace("{{model}}", html.escape(model.description)).encode()


def main(args: list[str]) -> None:
    try:
        values = key_values(args, KEYS)
        if not values["port"].isdigit() or not 0 < int(values["port"]) < 65536:
            raise UserError(f"port={values['port']} is not a port number (1 to 65535)")
        model = open_model(values["onnx"], values["ckpt_path"])
    except Exception as error:
        raise exit_line(error) from None
    try:
        server = DemoServer(model, values["host"], int(values["port"]))
    except OSError as error:  # the address is taken, not this machine's, or the port needs privileges
        raise SystemExit(f"error: cannot serve on {values['host']}:{values['port']} ({error.strerror})") from None
    host, port = server.server_address[:2]
    serve_until_interrupted(server, f"drawing page for {model.description} on http://{host}:{port}/ (Ctrl-C stops)")


if __name__ == "__main__":
    main(sys.argv[1:])
