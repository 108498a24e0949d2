"""URLs as messages and commands show them: never with a password (a search's database, a tracking server)."""

from __future__ import annotations

import re

# `scheme://user:password@rest`, read as SQLAlchemy reads a database URL: the password runs to the first `@` (one in
# it is written %40), so it may hold `/`, `?` or `#`, which urllib would take for the end of the host.
CREDENTIALS = re.compile(r"^(?P<scheme>[\w+.-]+://)(?P<user>[^:/@]*):(?P<password>[^@]*)@(?P<rest>.*)$", re.DOTALL)
QUOTES = ("'", '"')  # a command line's value quoted for Hydra's override grammar (a URL with `=` in its query)


def shown(url: str, *, runnable: bool = False) -> str:
    """`url` with its password hidden (`***`), or with `runnable` left out, so that the URL still works in a command
    (a database client then reads the password from its environment or password file, e.g. PGPASSWORD or ~/.pgpass);
    anything without a password as it is. A value in Hydra's quotes keeps them."""
    if len(url) > 1 and url[0] in QUOTES and url[-1] == url[0]:
        return f"{url[0]}{shown(url[1:-1], runnable=runnable)}{url[0]}"
    found = CREDENTIALS.match(url)
    if found is None:
        return url
    credentials = found["user"] if runnable else f"{found['user']}:***"
    return f"{found['scheme']}{credentials}@{found['rest']}"
