"""The Hugging Face hub: whether it may and can be reached, so that offline machines fail at
once with a clear message instead of after minutes of retries; ``--push-to-hub``.

A push (:func:`push_folder`) is one ``upload_folder`` call: one commit on the Hub, there
completely or not at all. What may be pushed is checked (:func:`check_push`) before any work."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamt_cli import __version__, verbosity
from tamt_cli.errors import UserError, first_line

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


# -- pushing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    """Where ``--push-to-hub`` uploads a folder: the repository, its visibility when it is made,
    the branch, and (``tamt finetune``) which seed's folder."""

    repo_id: str
    private: bool = False
    revision: str | None = None
    seed: int | None = None


def check_push(push: Push | None) -> None:
    """Refuse, before any work, a push that cannot happen: a malformed repository id, offline
    mode, a hub that does not answer, no token."""
    if push is None:
        return
    from huggingface_hub import get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(push.repo_id)
    except HFValidationError as exc:
        raise UserError(
            f"--push-to-hub '{push.repo_id}' is not a repository id ({first_line(exc)}); "
            "give user/name or org/name"
        ) from None
    if offline():
        named = ", ".join(var for var in OFFLINE_VARS if verbosity.flag(var))
        raise UserError(
            f"--push-to-hub needs the Hugging Face hub, but offline mode is set ({named}); "
            "nothing was done"
        )
    if not reachable():
        raise UserError(
            f"--push-to-hub: the Hugging Face hub ({endpoint()}) is unreachable; nothing was done"
        )
    try:
        token = get_token()
    except Exception as exc:  # a token source asked for (OIDC) that fails
        raise UserError(
            f"--push-to-hub: no usable Hugging Face token ({first_line(exc)})"
        ) from None
    if not token:
        raise UserError(
            "--push-to-hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN; "
            "nothing was done"
        )


def push_folder(push: Push, folder: Path, what: str) -> dict[str, Any]:
    """Upload ``folder`` to ``push.repo_id`` in one commit (the repository, and the branch
    ``push.revision``, made when missing); what was pushed where. A failure is one line that
    says the local folder is intact and how to upload it again."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(push.repo_id, private=push.private or None, exist_ok=True)
        if push.revision is not None:
            api.create_branch(push.repo_id, branch=push.revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=push.repo_id,
            folder_path=str(folder),
            revision=push.revision,
            commit_message=f"Upload {what} made with tamt {__version__}",
        )
    except Exception as exc:  # the hub's errors, the network's and the token's all end here
        branch = f" --revision {shlex.quote(push.revision)}" if push.revision else ""
        again = f"hf upload {shlex.quote(push.repo_id)} {shlex.quote(str(folder))} .{branch}"
        raise UserError(
            f"pushing to {push.repo_id} failed ({first_line(exc)}); no commit was made, and "
            f"'{folder}' is complete here: upload it with `{again}`"
        ) from None
    return {
        "repo": push.repo_id,
        "revision": push.revision,
        "url": str(url),
        "commit": getattr(commit, "oid", None),
        "folder": str(folder),
    }
