"""The Hugging Face hub: whether it may and can be reached, so that offline machines fail at
once with a clear message instead of after minutes of retries."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tamt_cli import verbosity

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """Whether the environment asks for offline mode."""
    return any(verbosity.flag(var) for var in OFFLINE_VARS)


def endpoint() -> str:
    """The hub's address (``HF_ENDPOINT``, else huggingface.co), as ``huggingface_hub`` uses it."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers an HTTP request within ``timeout`` seconds, through
    ``huggingface_hub``'s own HTTP client (so proxies such as ``HTTPS_PROXY`` apply). Any answer,
    even an error status, means the hub is reachable."""
    from huggingface_hub import get_session

    try:
        get_session().head(endpoint(), timeout=timeout, follow_redirects=False)
    except Exception:  # connection refused, no route, DNS failure, timeout, proxy failure
        return False
    return True


def usable() -> bool:
    return not offline() and reachable()


@contextlib.contextmanager
def cache_only() -> Iterator[None]:
    """Run ``datasets`` against the local cache only (no retries against a dead network)."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved
