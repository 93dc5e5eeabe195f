"""The test suite's own environment (tests/conftest.py): W&B is forced offline, also in the
processes tests start, and this process reaches no other machine while loopback still works."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers.cli_args import REPO
from tests.helpers.network import MESSAGE

PRINT_MODE = "import os; print(os.environ.get('WANDB_MODE'))"
DOCUMENTATION_ADDRESS = "203.0.113.7"  # TEST-NET-3 (RFC 5737): never a real machine


def test_wandb_mode_is_offline_here_and_in_child_processes():
    assert os.environ["WANDB_MODE"] == "offline"
    child = subprocess.run([sys.executable, "-c", PRINT_MODE], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "offline"


def test_a_users_wandb_mode_online_is_overridden():
    """With WANDB_MODE=online in the user's shell, loading the suite's conftest still makes it
    offline, for the test process and for what it starts."""
    script = f"import subprocess, sys, tests.conftest; {PRINT_MODE}; subprocess.run([sys.executable, '-c', {PRINT_MODE!r}])"
    env = {**os.environ, "WANDB_MODE": "online"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["offline", "offline"]


@pytest.mark.parametrize(
    "attempt",
    [
        lambda: socket.create_connection((DOCUMENTATION_ADDRESS, 80), timeout=1),
        lambda: socket.getaddrinfo("example.com", 443),
        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect((DOCUMENTATION_ADDRESS, 53)),
        lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect_ex((DOCUMENTATION_ADDRESS, 80)),
        lambda: urllib.request.urlopen("https://example.com/", timeout=1),
    ],
    ids=["create_connection", "getaddrinfo", "udp-connect", "connect_ex", "urlopen"],
)
def test_other_machines_are_unreachable(attempt):
    with pytest.raises(OSError, match=MESSAGE):
        attempt()


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "localhost"), (socket.AF_INET6, "::1")])
def test_loopback_connections_work(family, host):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
    except OSError as e:
        pytest.skip(f"cannot bind a loopback socket here: {e}")
    with server:
        server.listen(1)
        with socket.create_connection((host, server.getsockname()[1]), timeout=5) as client:
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"


def test_unix_sockets_work(tmp_path):
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            accepted, _ = server.accept()
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
