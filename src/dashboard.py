"""`python -m src.dashboard DIR|STORAGE [--port N] [--host H]`: a search's study in optuna-dashboard, served on
localhost. DIR is a search's sweep dir (its `optuna.db`); STORAGE a study's storage as `hydra.sweeper.storage` takes
it (sqlite:///PATH, postgresql://..., journal:PATH) or a SQLite or journal file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from src.core.cli import module_installed
from src.core.errors import UserError, reason_of
from src.core.serve import serve_until_interrupted
from src.core.urls import shown

if TYPE_CHECKING:
    import optuna

SQLITE, JOURNAL = "sqlite:///", "journal:"
DATABASES = ("postgresql://", "postgresql+psycopg://")
STUDY_FILE = "optuna.db"  # a search's study in its sweep dir (conf/hparams_search/optuna.yaml)
WHAT = (
    f"a search's dir (outputs/searches/<recipe>, holding {STUDY_FILE}) or its storage "
    f"({SQLITE}PATH, postgresql://..., {JOURNAL}PATH)"
)


def storage_of(target: str) -> str:
    """The storage `target` names: a sweep dir's optuna.db, a SQLite or journal file, or a storage URL as given."""
    if target.startswith((SQLITE, JOURNAL, *DATABASES)):
        return target
    path = Path(target).expanduser()
    if path.is_dir():
        if not (path / STUDY_FILE).is_file():
            raise UserError(f"{target} holds no Optuna study (no {STUDY_FILE}); give {WHAT}")
        return f"{SQLITE}{(path / STUDY_FILE).resolve()}"
    if path.is_file():
        with open(path, "rb") as file:
            sqlite_file = file.read(16) == b"SQLite format 3\x00"
        return f"{SQLITE}{path.resolve()}" if sqlite_file else f"{JOURNAL}{path.resolve()}"
    raise UserError(f"{shown(target)} is neither a dir, a file nor a storage URL; give {WHAT}")


def check_journal(storage: str) -> None:
    """A journal storage is a file of Optuna's journal (Optuna would add its operations to any other file)."""
    path = Path(storage.removeprefix(JOURNAL).removeprefix("//")).expanduser()
    if not path.is_file():
        raise UserError(f"{storage}: no such journal file")
    with open(path, "rb") as file:
        first = file.readline()
    try:  # each line of Optuna's journal is one operation: a JSON object with its op_code
        journal = not first or "op_code" in json.loads(first)
    except (ValueError, TypeError):
        journal = False
    if not journal:
        raise UserError(f"{path} is neither a SQLite nor an Optuna journal file")


def open_storage(storage: str) -> optuna.storages.BaseStorage:
    """The storage, read as it is (no file or table is created where the target is wrong), or one line naming it
    and what failed."""
    if storage.startswith(JOURNAL):
        check_journal(storage)
    from src.core.search import open_storage as open_study_storage  # noqa: PLC0415 - Optuna's import, paid here

    return open_study_storage(storage, read_only=True)


def study_lines(storage: optuna.storages.BaseStorage) -> list[str]:
    """One line per study: its trials by state and its best value (or one line saying there is none)."""
    from src.core.search import counted, trial_counts  # noqa: PLC0415

    lines = []
    for study in storage.get_all_studies():
        trials = storage.get_all_trials(storage.get_study_id_from_name(study.study_name), deepcopy=False)
        complete = [trial.value for trial in trials if trial.state.name == "COMPLETE" and trial.value is not None]
        best = (max if study.direction.name == "MAXIMIZE" else min)(complete) if complete else None
        shown_best = f"; best {best:g} ({study.direction.name.lower()})" if best is not None else ""
        lines.append(f"study {study.study_name}: {len(trials)} trials ({counted(trial_counts(trials))}){shown_best}")
    return lines


class QuietHandler(WSGIRequestHandler):
    """No line per request (the dashboard polls every few seconds); errors are still written."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection does not keep the process alive after Ctrl-C


def make_dashboard(storage: optuna.storages.BaseStorage, host: str, port: int) -> WSGIServer:
    """optuna-dashboard's app, bound to HOST:PORT (0: a free port, `server_port` says which); serve_forever serves."""
    from optuna_dashboard import wsgi  # noqa: PLC0415

    try:
        return make_server(host, port, wsgi(storage), server_class=ThreadingServer, handler_class=QuietHandler)
    except OSError as error:
        raise UserError(
            f"cannot serve on {host}:{port} ({error.strerror or error}); choose another with --port N (0: a free one)"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", metavar="DIR|STORAGE", help=WHAT)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="the port (default 8080; 0: a free one)")
    args = parser.parse_args(argv)
    missing = [package for package in ("optuna", "optuna_dashboard") if not module_installed(package)]
    if missing:
        sys.exit(f"error: the dashboard needs {' and '.join(missing)}: make install (or pip install -e '.[tracking]')")
    from optuna.exceptions import StorageInternalError  # noqa: PLC0415 - checked above
    from sqlalchemy.exc import SQLAlchemyError  # noqa: PLC0415 - installed with Optuna

    try:
        storage = open_storage(storage_of(args.target))
        lines = study_lines(storage)
        if not lines:
            raise UserError(f"{shown(args.target)} holds no Optuna study yet")
        server = make_dashboard(storage, args.host, args.port)
    except UserError as error:
        sys.exit(f"error: {error}")
    except (SQLAlchemyError, StorageInternalError, RuntimeError) as error:  # the database failed as it was read
        sys.exit(f"error: {shown(args.target)} cannot be read: {reason_of(error.__cause__ or error)}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{server.server_port}/dashboard"
    serve_until_interrupted(server, "\n".join([*lines, f"optuna-dashboard: {url} (Ctrl-C stops it)"]))


if __name__ == "__main__":
    main()
