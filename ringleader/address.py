"""Listening addresses: ``HOST:PORT`` settings and the sockets bound to them."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ringleader.settings import ConfigError


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(option: str, text: str) -> Address:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{option}: expected HOST:PORT, got {text!r}")
    return Address(host, int(port))


class BindError(OSError):
    pass


def bind(address: Address, what: str) -> socket.socket:
    """A listening socket that worker processes can inherit; BindError names ``what``."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise BindError(f"{what} {address}: cannot listen: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
