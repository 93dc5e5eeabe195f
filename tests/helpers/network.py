"""Blocking the network in a test process: any connection attempt fails at once."""

from __future__ import annotations

import socket

import pytest


def offline(*args, **kwargs):
    raise OSError("network access is disabled in the tests")


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection in this process fail at once."""
    monkeypatch.setattr(socket.socket, "connect", offline)
    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(socket, "getaddrinfo", offline)
