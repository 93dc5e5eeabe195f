"""Blocking the network in a test process: any connection to another machine fails at once.

`block_network(monkeypatch)` (autouse for the whole suite, tests/conftest.py) lets a socket
reach only this machine: Unix sockets and the loopback addresses 127.0.0.0/8 and ::1 (W&B's
offline service and Lightning talk to local processes that way). Any other connect, and any
name lookup other than "localhost", raises OSError("network access is disabled in the tests").
Only this process is patched; programs the tests start (npm, the DDP ranks) are not, so a test
replaces those it must keep offline.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

MESSAGE = "network access is disabled in the tests"
LOCAL_NAMES = frozenset({None, "", "localhost", "localhost.localdomain", "ip6-localhost"})


def offline(*args, **kwargs):
    raise OSError(MESSAGE)


def is_local_host(host: object) -> bool:
    """True for "localhost" and loopback address literals (127.0.0.0/8, ::1)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def is_local_address(family: int, address: object) -> bool:
    """True when a socket of `family` connecting to `address` stays on this machine."""
    if family == getattr(socket, "AF_UNIX", None):
        return True
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple) and address:
        return is_local_host(address[0])
    return False


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach another machine from this process fail at once (see module doc)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        if not is_local_address(self.family, address):
            offline()
        return real_connect(self, address)

    def connect_ex(self, address):
        if not is_local_address(self.family, address):
            offline()
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not is_local_host(host):
            offline()
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
