"""`python -m src.dashboard DIR|STORAGE [--port N] [--host H]`: a search's study in optuna-dashboard, served on
localhost. DIR is a search's sweep dir (its `optuna.db`); STORAGE a study's storage as `hydra.sweeper.storage` takes
it (sqlite:///PATH, postgresql://..., journal:PATH) or a SQLite or journal file."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from src.core.cli import module_installed
from src.core.errors import UserError
from src.core.serve import serve_until_interrupted

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
    raise UserError(f"{target} is neither a dir, a file nor a storage URL; give {WHAT}")


def check_file(storage: str) -> None:
    """A file storage is read, never created: Optuna would create an empty study file (or its tables in another
    program's SQLite file) where the path is wrong."""
    if storage.startswith(JOURNAL):
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
    elif storage.startswith(SQLITE):
        path = Path(storage.removeprefix(SQLITE)).expanduser()
        if not path.is_file():
            raise UserError(f"{storage}: no such SQLite file")
        try:
            with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as database:
                tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as error:
            raise UserError(f"{storage} cannot be read: {error}") from None
        if "studies" not in tables:
            raise UserError(f"{storage} is a SQLite file without Optuna's tables: no study in it")
    elif not storage.startswith(DATABASES):
        raise UserError(f"{storage} is not {WHAT}")


def open_storage(storage: str) -> optuna.storages.BaseStorage:
    """The storage, read as the search writes it, or one line naming it and what failed."""
    check_file(storage)
    import optuna  # noqa: PLC0415 - after the checks: a mistyped path is answered at once
    import sqlalchemy  # noqa: PLC0415

    from src.core.search import database_url, shown  # noqa: PLC0415

    try:
        if storage.startswith(JOURNAL):
            path = Path(storage.removeprefix(JOURNAL).removeprefix("//")).expanduser()
            opened = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        else:  # SQLite: wait for a worker's write instead of failing on a locked database
            engine = {"connect_args": {"timeout": 60}} if storage.startswith(SQLITE) else {"pool_pre_ping": True}
            opened = optuna.storages.RDBStorage(database_url(storage), engine_kwargs=engine)
        opened.get_all_studies()
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError, ImportError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{shown(storage)} cannot be opened: {reason}") from None
    return opened


def study_lines(storage: optuna.storages.BaseStorage) -> list[str]:
    """One line per study: its trials by state and its best value (or one line saying there is none)."""
    lines = []
    for study in storage.get_all_studies():
        trials = storage.get_all_trials(study._study_id, deepcopy=False)
        states = Counter(trial.state.name.lower() for trial in trials)
        counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        complete = [trial.value for trial in trials if trial.state.name == "COMPLETE" and trial.value is not None]
        best = (max if study.direction.name == "MAXIMIZE" else min)(complete) if complete else None
        shown_best = f"; best {best:g} ({study.direction.name.lower()})" if best is not None else ""
        lines.append(f"study {study.study_name}: {len(trials)} trials ({counts or 'none yet'}){shown_best}")
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
    try:
        storage = open_storage(storage_of(args.target))
        lines = study_lines(storage)
        if not lines:
            raise UserError(f"{args.target} holds no Optuna study yet")
        server = make_dashboard(storage, args.host, args.port)
    except UserError as error:
        sys.exit(f"error: {error}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{server.server_port}/dashboard"
    serve_until_interrupted(server, "\n".join([*lines, f"optuna-dashboard: {url} (Ctrl-C stops it)"]))


if __name__ == "__main__":
    main()
