"""URLs as messages and commands show them: never with a password (a search's database, a tracking server)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def shown(url: str, *, runnable: bool = False) -> str:
    """`url` with its password hidden (`***`), or with `runnable` left out, so that the URL still works in a command
    (a database client then reads the password from its environment or password file, e.g. PGPASSWORD or ~/.pgpass);
    anything without a password as it is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL urllib reads: what follows its credentials, if any
        return url.rpartition("@")[2]
    if password is None:
        return url
    credentials, _, host = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if runnable else f"{user}:***@{host}"))
