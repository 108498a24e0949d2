"""Local pages (the drawing page, the search dashboard) served in the foreground until Ctrl-C."""

from __future__ import annotations

import socketserver


def serve_until_interrupted(server: socketserver.BaseServer, banner: str) -> None:
    """Prints where the page is, serves until Ctrl-C, then closes the server's socket."""
    print(banner, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
