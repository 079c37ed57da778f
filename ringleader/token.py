"""The cluster token: a shared secret for peer RPC and every state-changing admin call."""

from __future__ import annotations

import hmac
import os

TOKEN_ENV = "RINGLEADER_TOKEN"


class TokenError(ValueError):
    pass


def read_token_file(path: str, option: str = "--token-file") -> str:
    """A secret from a file; the message of a TokenError names `option` and the file."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except OSError as exc:
        raise TokenError(f"{option} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TokenError(f"{option} {path}: not a text file") from None
    if not token:
        raise TokenError(f"{option} {path}: the file is empty")
    # It travels in an Authorization header.
    if not token.isascii() or not token.isprintable():
        raise TokenError(f"{option} {path}: expected one printable ASCII token")
    return token


def load_token(token_file: str | None) -> str | None:
    """The token from `--token-file`, else from $RINGLEADER_TOKEN, else None."""
    if token_file:
        return read_token_file(token_file)
    token = os.environ.get(TOKEN_ENV, "").strip()
    return token or None


def authorized(expected: str | None, header: str | None) -> bool:
    """Whether an `Authorization: Bearer ...` header carries the token.

    Compared in constant time. With no token configured nothing is authorized: a cluster
    without a secret accepts no state change from the network.
    """
    if expected is None or header is None:
        return False
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def bearer(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}
