"""What a lab's machine meets: the hub check through proxies, `tamt env`, `tamt cache`."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tamt_cli import hub


class _Answer(http.server.BaseHTTPRequestHandler):
    """Answers every HEAD or GET with 200, recording the request line it was sent."""

    seen: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        type(self).seen.append(self.requestline)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[str]:
    _Answer.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fresh_hub_session(monkeypatch):
    """Online (the tests run offline), no proxy variables; huggingface_hub's shared HTTP client
    reads proxy variables when it is made."""
    import huggingface_hub
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    huggingface_hub.close_session()
    yield monkeypatch
    huggingface_hub.close_session()


def test_hub_check_follows_the_endpoint(local_server, fresh_hub_session):
    import huggingface_hub.constants as constants

    fresh_hub_session.setattr(constants, "ENDPOINT", local_server)
    assert hub.reachable(timeout=5)
    assert _Answer.seen and _Answer.seen[0].startswith("HEAD / ")
    fresh_hub_session.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard: refused
    assert not hub.reachable(timeout=2)


def test_hub_check_goes_through_a_proxy(local_server, fresh_hub_session):
    """A host that does not resolve here is reachable through the proxy that answers for it."""
    import huggingface_hub.constants as constants

    fresh_hub_session.setattr(constants, "ENDPOINT", "http://hub.invalid")
    assert not hub.reachable(timeout=2)
    import huggingface_hub

    huggingface_hub.close_session()
    fresh_hub_session.setenv("HTTP_PROXY", local_server)
    assert hub.reachable(timeout=5)
    assert any("http://hub.invalid" in line for line in _Answer.seen), _Answer.seen
