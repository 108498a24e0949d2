"""URLs in messages and commands (src.core.urls): the password hidden or left out, nothing else changed."""

from __future__ import annotations

import pytest

from src.core.urls import shown


@pytest.mark.parametrize(
    ("url", "hidden", "runnable"),
    [
        ("postgresql://me:pw@db.example:5432/studies", "postgresql://me:***@db.example:5432/studies",
         "postgresql://me@db.example:5432/studies"),
        ("postgresql+psycopg://me:p%40ss@db/studies?sslmode=require", "postgresql+psycopg://me:***@db/studies?"
         "sslmode=require", "postgresql+psycopg://me@db/studies?sslmode=require"),
        ("http://me:secret@127.0.0.1:5000", "http://me:***@127.0.0.1:5000", "http://me@127.0.0.1:5000"),
        # a password with characters urllib takes for the host's end, as SQLAlchemy still reads it
        ("postgresql://u:pa/ss?#x@h/db", "postgresql://u:***@h/db", "postgresql://u@h/db"),
        # quoted for Hydra's override grammar (a query's `=` needs it): masked inside the quotes
        ("'postgresql://u:pw@h/db?sslmode=require'", "'postgresql://u:***@h/db?sslmode=require'",
         "'postgresql://u@h/db?sslmode=require'"),
    ],
)  # fmt: skip
def test_a_password_is_hidden_in_a_message_and_left_out_of_a_command(url: str, hidden: str, runnable: str) -> None:
    assert shown(url) == hidden
    assert shown(url, runnable=True) == runnable


@pytest.mark.parametrize(
    "url",
    ["sqlite:////tmp/optuna.db", "journal:///tmp/a:b@c.log", "postgresql:///studies?host=/run/postgresql",
     "postgresql://me@db/studies", "journal:studies.log", "http://127.0.0.1:5000"],
)  # fmt: skip
def test_a_url_without_a_password_is_shown_as_given(url: str) -> None:
    assert shown(url) == shown(url, runnable=True) == url
