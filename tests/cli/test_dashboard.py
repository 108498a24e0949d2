"""`python -m src.dashboard` (`make dashboard`): a study made with Optuna's API, served on a free localhost port, read
back over optuna-dashboard's JSON API (/api/studies, /api/studies/<id>); a dir, file or database without a study: one
line, nothing created in it, and no password shown."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from src.core.cli import module_installed
from tests.helpers import REPO, new_database

pytestmark = pytest.mark.skipif(
    not (module_installed("optuna") and module_installed("optuna_dashboard")),
    reason="Optuna or optuna-dashboard is not installed: pip install -e '.[sweep,tracking]'",
)
VALUES = [91.5, 97.25]  # the complete trials' values; a third trial is pruned after reporting epoch 1


def make_study(storage: Any, name: str = "record") -> None:
    """Two complete trials (each with its epoch-1 report) and one pruned, as a search of two workers leaves them."""
    import optuna  # noqa: PLC0415

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    space = {"optimizer.lr": optuna.distributions.FloatDistribution(0.005, 0.2, log=True)}
    for value in VALUES:
        trial = study.ask(space)
        trial.report(value - 1, 1)
        study.tell(trial, value)
    trial = study.ask(space)
    trial.report(50.0, 1)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def assert_study_served(base: str) -> None:
    """The study list, then the study's trials by state, values, reports and params, as the dashboard serves them."""
    (summary,) = get(f"{base}/api/studies")["study_summaries"]
    assert (summary["study_name"], summary["directions"]) == ("record", ["maximize"])
    detail = get(f"{base}/api/studies/{summary['study_id']}")
    trials = sorted(detail["trials"], key=lambda trial: trial["number"])
    assert [trial["state"] for trial in trials] == ["Complete", "Complete", "Pruned"]
    assert [trial["values"] for trial in trials[:2]] == [[value] for value in VALUES]
    assert [trial["intermediate_values"] for trial in trials] == [
        [{"step": 1, "value": value}] for value in (VALUES[0] - 1, VALUES[1] - 1, 50.0)
    ]
    assert {param["name"] for trial in trials for param in trial["params"]} == {"optimizer.lr"}
    assert [trial["values"] for trial in detail["best_trials"]] == [[max(VALUES)]]


@pytest.mark.slow
def test_dashboard_command_serves_a_search_dirs_study(tmp_path: Path) -> None:
    search = tmp_path / "searches" / "record"
    search.mkdir(parents=True)
    make_study(f"sqlite:///{search / 'optuna.db'}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "src.dashboard", str(search), "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first, second = process.stdout.readline(), process.stdout.readline()
        assert first == f"study record: 3 trials (2 complete, 1 pruned); best {max(VALUES):g} (maximize)\n", (
            first + process.stderr.read() if process.poll() is not None else first
        )
        prefix, suffix = "optuna-dashboard: http://127.0.0.1:", "/dashboard (Ctrl-C stops it)\n"
        assert second.startswith(prefix) and second.endswith(suffix), second
        base = f"http://127.0.0.1:{int(second.removeprefix(prefix).removesuffix(suffix))}"
        assert_study_served(base)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_journal_files_study_is_served(tmp_path: Path) -> None:
    import optuna  # noqa: PLC0415

    from src.dashboard import make_dashboard, open_storage, storage_of  # noqa: PLC0415

    journal = tmp_path / "study.log"
    make_study(optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))))
    assert storage_of(str(journal)) == f"journal:{journal}"
    server = make_dashboard(open_storage(f"journal:{journal}"), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert_study_served(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def bad_inputs(tmp_path: Path) -> list[tuple[str, str]]:
    """Each bad target and the one line it gets; nothing is created where it points."""
    (tmp_path / "no_study").mkdir()
    (tmp_path / "notes.txt").write_text("not a study\n")
    import optuna  # noqa: PLC0415

    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE runs (id INTEGER)")
    other.close()
    (tmp_path / "no_trials").mkdir()
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'no_trials' / 'optuna.db'}")  # Optuna's tables, no study
    return [
        (str(tmp_path / "no_study"), f"error: {tmp_path / 'no_study'} holds no Optuna study (no optuna.db); give "),
        (str(tmp_path / "nowhere"), f"error: {tmp_path / 'nowhere'} is neither a dir, a file nor a storage URL"),
        (f"sqlite:///{tmp_path / 'none.db'}", f"error: sqlite:///{tmp_path / 'none.db'}: no such SQLite file"),
        (f"journal:{tmp_path / 'none.log'}", f"error: journal:{tmp_path / 'none.log'}: no such journal file"),
        (str(tmp_path / "notes.txt"), f"error: {tmp_path / 'notes.txt'} is neither a SQLite nor an Optuna journal"),
        (f"journal:{tmp_path / 'notes.txt'}", f"error: {tmp_path / 'notes.txt'} is neither a SQLite nor an Optuna"),
        (str(tmp_path / "other.db"), "other.db holds no Optuna study: the database has none of Optuna's tables"),
        ("mysql://me:secret@host/db", "error: mysql://me:***@host/db is neither a dir, a file nor a storage URL"),
        (str(tmp_path / "no_trials"), f"error: {tmp_path / 'no_trials'} holds no Optuna study yet"),
    ]


def test_a_target_without_a_study_is_one_line(tmp_path: Path) -> None:
    from src.dashboard import main  # noqa: PLC0415

    for target, line in bad_inputs(tmp_path):
        with pytest.raises(SystemExit) as exit_:
            main([target, "--port", "0"])
        message = str(exit_.value.code)
        assert "\n" not in message and line in message and "secret" not in message, (target, message)
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "none.log").exists()


def test_a_database_that_fails_as_its_studies_are_read_is_one_line(tmp_path: Path) -> None:
    """Optuna's tables are there, but reading them fails (here: one dropped; a dropped connection, a missing grant)."""
    from src.dashboard import main  # noqa: PLC0415

    database = tmp_path / "optuna.db"
    make_study(f"sqlite:///{database}")
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE trial_values")
    with pytest.raises(SystemExit) as exit_:
        main([str(database), "--port", "0"])
    message = str(exit_.value.code)
    assert message.startswith(f"error: {database} cannot be read: (sqlite3.OperationalError) no such table") and (
        "\n" not in message
    )


def test_an_empty_postgresql_database_is_one_line_and_stays_empty(postgres_url: str) -> None:
    """The dashboard reads a database as it is: Optuna's tables are not made in one that has none."""
    import sqlalchemy  # noqa: PLC0415

    from src.core.search import database_url, open_storage  # noqa: PLC0415
    from src.dashboard import main  # noqa: PLC0415

    url = new_database(postgres_url, "dashboard_empty", password="secret")
    shown = url.replace(":secret@", ":***@")
    with pytest.raises(SystemExit) as exit_:
        main([url, "--port", "0"])
    assert str(exit_.value.code) == f"error: {shown} holds no Optuna study: the database has none of Optuna's tables"
    engine = sqlalchemy.create_engine(database_url(url), poolclass=sqlalchemy.pool.NullPool)
    assert sqlalchemy.inspect(engine).get_table_names() == []
    engine.dispose()
    open_storage(url)  # a search's worker makes the tables, and no study yet
    with pytest.raises(SystemExit) as exit_:
        main([url, "--port", "0"])
    assert str(exit_.value.code) == f"error: {shown} holds no Optuna study yet"


def test_a_busy_port_is_one_line(tmp_path: Path) -> None:
    from src.dashboard import main  # noqa: PLC0415

    make_study(f"sqlite:///{tmp_path / 'optuna.db'}")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main([str(tmp_path), "--port", str(port)])
    assert str(exit_.value.code).startswith(f"error: cannot serve on 127.0.0.1:{port} (")
    assert str(exit_.value.code).endswith("choose another with --port N (0: a free one)")
