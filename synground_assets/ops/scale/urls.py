"""Service URLs as they may be shown: the password of a broker or database URL never reaches a log,
an error or the UI. `redis://:s3cret@host:6379/0` is shown as `redis://:***@host:6379/0`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# `scheme://user:password@` anywhere in a text (an exception's message may quote a URL).
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?=@)")


def safe_url(url: str | None) -> str:
    """`url` with its password masked; a URL without one is returned as it is."""
    if not url:
        return str(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all: mask whatever looks like credentials
        return redact(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every `scheme://user:password@` password and every given secret masked."""
    text = _CREDENTIALS.sub(lambda match: f"{match['head']}{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def password_of(url: str | None) -> str | None:
    """The password in `url`, if any (to mask it wherever the URL's parts are quoted apart)."""
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None
