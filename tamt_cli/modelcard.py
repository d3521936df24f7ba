"""Model cards: the ``README.md`` every export and every fine-tuned seed carries, in the
Hugging Face Hub's format (YAML front matter, then markdown).

A card says what made the model: the base model, the method, its objective, the sparsity
overall and per kind of matrix, the pattern, the corpus and steps, the ``tamt`` commands (built
from the specs; absolute local paths shortened to their last part), the held-out loss and task
metrics where known, how to load it and the paper to cite. It is built with
``huggingface_hub``'s ``ModelCardData`` and ``ModelCard`` and written into the export's staged
folder, so it appears with the export or not at all. Pushing a folder to the Hub:
:mod:`tamt_cli.hub`."""

from __future__ import annotations

import functools
import json
import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tamt_cli import __version__, artifacts, hub, records
from tamt_cli.hub import Push

#: tags every card carries (the method's name and ``sparse`` are added where they apply)
TAGS = ("pruning", "lottery-ticket", "tamt")

CITATION = """\
@inproceedings{liu-etal-2022-learning,
    title = "Learning to Win Lottery Tickets in {BERT} Transfer via Task-agnostic Mask Training",
    author = "Liu, Yuanxin  and
      Meng, Fandong  and
      Lin, Zheng  and
      Fu, Peng  and
      Cao, Yanan  and
      Wang, Weiping  and
      Zhou, Jie",
    booktitle = "Proceedings of the 2022 Conference of the North American Chapter of the \
Association for Computational Linguistics: Human Language Technologies",
    month = jul,
    year = "2022",
    address = "Seattle, United States",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2022.naacl-main.428",
    pages = "5840--5857",
}"""

METHODS = {
    "omp": "one-shot magnitude pruning of the pre-trained weights",
    "random": "random pruning",
    "mlm": "task-agnostic mask training (TAMT) on the masked-language-modelling loss",
    "kd": "task-agnostic mask training (TAMT) on the knowledge-distillation loss",
    "mlm-kd": "task-agnostic mask training (TAMT) on the MLM and KD losses together",
    "imp": "iterative magnitude pruning, training the weights on a pre-training objective",
}
OBJECTIVES = {
    "mlm": "masked language modelling (15% of tokens masked)",
    "kd": "knowledge distillation from the dense model: 1 − cosine similarity of every "
    "layer's hidden states",
    "mlm-kd": "the MLM and KD losses summed",
}
KINDS = {
    "Q": "attention query",
    "K": "attention key",
    "V": "attention value",
    "AO": "attention output",
    "I": "feed-forward in",
    "O": "feed-forward out",
    "pooler": "pooler",
    "embedding": "word embeddings",
}
COMPRESSED_DOCS = "docs/runs.md#compressed-exports"


# -- commands --------------------------------------------------------------------------------


def shown_path(value: str) -> str:
    """A path as a card shows it: as given, but an absolute one by its last part (``…/name``),
    so no card names a local folder."""
    parts = []
    for part in value.split(","):
        if os.path.isabs(part.strip()):
            part = f"…/{Path(part.strip()).name}"
        parts.append(part)
    return ",".join(parts)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return shown_path(value)
    if isinstance(value, int | float) or value is None:
        return "null" if value is None else str(value)
    return json.dumps(value)


def _joined(values: Sequence[Any]) -> str:
    return ",".join(_scalar(v) for v in values)


def _default(field: Any) -> Any:
    value = field.get_default(call_default_factory=True)
    return value.as_posix() if isinstance(value, Path) else value


def _flags(name: str, value: Any) -> list[str]:
    """The command-line words that give ``value`` to the spec field ``name``."""
    dashed = "--" + name.replace("_", "-")
    if name in ("options", "task_options"):
        flag = "-o" if name == "options" else "--task-option"
        return [word for k, v in value.items() for word in (flag, f"{k}={_scalar(v)}")]
    if name == "seeds":
        return ["--seed", str(value[0])] if len(value) == 1 else ["--seeds", _joined(value)]
    if isinstance(value, bool):
        return [dashed if value else f"--no-{name.replace('_', '-')}"]
    if isinstance(value, list):
        return [dashed, _joined(value)]
    return [dashed, _scalar(value)]


def command_line(
    command: str,
    spec: type[BaseModel],
    values: Mapping[str, Any],
    arguments: Sequence[str] = (),
) -> str:
    """``tamt <command> ...``: a command line that makes the spec ``values`` (JSON form, as in
    a saved ``spec.yaml``) again; ``arguments`` are the fields given by position. Values equal
    to the field's default are left out."""
    words = ["tamt", command, *(_scalar(values[name]) for name in arguments)]
    for name, value in values.items():
        field = spec.model_fields.get(name)
        if name in arguments or value is None:
            continue
        if field is not None and not field.is_required() and value == _default(field):
            continue
        words += _flags(name, value)
    return " ".join(_quote(word) for word in words)


def _quote(word: str) -> str:
    """``word`` quoted for a shell where it needs it (the ``…`` of a shortened path does not)."""
    plain = word.replace("…", "x")
    return word if shlex.quote(plain) == plain else shlex.quote(word)


def search_command(run_dir: Path) -> str | None:
    """The ``tamt search`` command of a search run, from its saved spec (None without one)."""
    from tamt_cli.specs import SearchSpec

    values = saved_spec(run_dir)
    return None if values is None else command_line("search", SearchSpec, values)


def saved_spec(run_dir: Path) -> dict[str, Any] | None:
    """The spec a run saved (``spec.yaml``), None where it saved none."""
    path = Path(run_dir) / artifacts.SPEC_FILE
    if not path.is_file():
        return None
    return records.as_dict(records.load(path, records.SavedSpec))


# -- what made a mask ------------------------------------------------------------------------


def hub_datasets(corpus: str | None) -> list[str]:
    """The hub datasets among a corpus's comma-separated parts."""
    from tamt_cli.corpora import HUB_ALIASES

    parts = [part.strip() for part in (corpus or "").split(",")]
    return list(dict.fromkeys(HUB_ALIASES[p][0] for p in parts if p in HUB_ALIASES))


def _held_out(run_dir: Path, step: int | None) -> float | None:
    """The held-out loss a training search logged at ``step`` (None when it logged none)."""
    path = Path(run_dir) / artifacts.METRICS_LOG
    if step is None or not path.is_file():
        return None
    found = None
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            try:
                data = json.loads(line)
            except ValueError:
                continue  # a line a killed run left unfinished
            row = records.check(path, data, records.LogRow, line=number)
            losses = [v for k, v in records.as_dict(row).items() if k.startswith("eval_loss")]
            if row.step == step and losses and isinstance(losses[0], int | float):
                found = float(losses[0])
    return found


def search_record(run_dir: Path, manifest: Mapping[str, Any], entry: Mapping[str, Any]) -> dict:
    """What a card says about the search that made the mask ``entry`` of a run: objective,
    corpus (and its hub datasets), steps, the held-out loss logged at that step, and the
    commands. An export's manifest carries it as ``search`` and ``commands``."""
    if manifest.get("kind") == "subnetwork":
        return dict(manifest.get("search") or {})
    notes = manifest.get("notes") or {}
    corpus = (saved_spec(run_dir) or {}).get("corpus") if "corpus" in notes else None
    step = entry.get("step") if entry.get("step") is not None else notes.get("steps")
    return {
        "objective": notes.get("objective"),
        "corpus": corpus,
        "datasets": hub_datasets(corpus),
        "steps": step,
        "held_out_loss": _held_out(run_dir, entry.get("step")),
    }


def previous_commands(run_dir: Path, manifest: Mapping[str, Any]) -> list[str]:
    """The commands that made a search run or an export (for the next command's card)."""
    if manifest.get("kind") == "subnetwork":
        return list(manifest.get("commands") or [])
    command = search_command(run_dir) if manifest.get("kind") == "search" else None
    return [command] if command else []


# -- the base model --------------------------------------------------------------------------


def base_model(record: Mapping[str, Any]) -> str | None:
    """The hub id of the model a run was made from (``demo``: the model it packages); None
    for a local folder."""
    from tamt_cli.models import DEMO, DEMO_HUB_ID

    given = record.get("id")
    if given == DEMO:
        return DEMO_HUB_ID
    local = record.get("local")
    if local is None:
        local = bool(record.get("location")) and Path(str(record["location"])).is_dir()
    return None if local or not given else str(given)


def _card_fields(path: Path) -> dict[str, Any]:
    from huggingface_hub import metadata_load

    try:
        data = metadata_load(path) or {}
    except Exception:  # a card that does not parse tells nothing
        return {}
    return {k: data[k] for k in ("license", "license_name", "license_link") if data.get(k)}


@functools.lru_cache(maxsize=16)
def _hub_license(repo_id: str) -> tuple[tuple[str, Any], ...]:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "README.md")
    if not isinstance(cached, str) and hub.usable():
        try:
            cached = hf_hub_download(repo_id, "README.md", etag_timeout=5)
        except Exception:  # no card on the hub, or it cannot be read: no license known
            cached = None
    return tuple(_card_fields(Path(cached)).items()) if isinstance(cached, str) else ()


def base_license(record: Mapping[str, Any]) -> dict[str, Any]:
    """``license`` (and ``license_name``/``license_link``) from the base model's card: the
    ``README.md`` of its local folder, or of its hub repository (the local cache first)."""
    location = record.get("location")
    if location and (Path(str(location)) / "README.md").is_file():
        return _card_fields(Path(str(location)) / "README.md")
    hub_id = base_model(record)
    return dict(_hub_license(hub_id)) if hub_id else {}


# -- cards ------------------------------------------------------------------------------------


def _card(data: dict[str, Any], body: str) -> str:
    """The card's text: ``data`` as its front matter (through ``ModelCardData``), then
    ``body``; parsed back once, so that what is written is a card the Hub reads."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = ModelCardData(**{k: v for k, v in data.items() if v not in (None, [], {})})
    text = f"---\n{meta.to_yaml()}\n---\n\n{body.strip()}\n"
    ModelCard(text)
    return text


def _tags(method: str | None, sparse: bool, *more: str) -> list[str]:
    tags = [*TAGS, *([method] if method else []), *(["sparse"] if sparse else []), *more]
    return list(dict.fromkeys(tags))


def _rows(rows: Sequence[tuple[str, Any]]) -> str:
    lines = ["| | |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows if value not in (None, "")]
    return "\n".join(lines)


def _sparsity_kinds(report: Mapping[str, Any] | None) -> str:
    """The manifest's sparsity report as a markdown table, kind by kind, then overall."""
    if not report or not report.get("kinds"):
        return ""
    lines = [
        "| kind | matrices | weights | pruned | sparsity |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in report["kinds"].items():
        lines.append(
            f"| {_kind(kind)} | {row['matrices']} | {row['numel']:,} | "
            f"{row['pruned']:,} | {row['sparsity']:.2%} |"
        )
    overall = report["overall"]
    count = sum(row["matrices"] for row in report["kinds"].values())
    lines.append(
        f"| **overall** | {count} | {overall['numel']:,} | {overall['pruned']:,} | "
        f"**{overall['sparsity']:.2%}** |"
    )
    return "\n".join(lines)


def _kind(kind: str) -> str:
    name = KINDS.get(kind, kind)
    return name if name == kind else f"{name} ({kind})"


def _sparsity_text(manifest: Mapping[str, Any], achieved: float | None) -> str | None:
    target, scope = manifest.get("sparsity"), manifest.get("scope")
    if achieved is None and target is None:
        return None
    value = achieved if achieved is not None else target
    how = {
        "local": f"every masked matrix at {target:g}" if target is not None else "per matrix",
        "global": "over all masked matrices together",
    }.get(str(scope), "")
    return f"{value:.2%} of the masked weights are zero" + (f" ({how})" if how else "")


def _masked(manifest: Mapping[str, Any]) -> str:
    """Which matrices the mask covers."""
    parts = ["attention query, key, value and output", "both feed-forward matrices"]
    if manifest.get("pooler", True):
        parts.append("the pooler")
    if manifest.get("embeddings", True):
        parts.append("the word embeddings")
    return f"{', '.join(parts[:-1])} and {parts[-1]} (biases and LayerNorms stay dense)"


def _model_name(record: Mapping[str, Any]) -> str:
    """The base model's hub id, or a local folder's name."""
    return base_model(record) or Path(str(record.get("id") or "model")).name


def _base_text(record: Mapping[str, Any]) -> str:
    hub_id = base_model(record)
    shape = ", ".join(
        part
        for part in (
            record.get("model_type"),
            f"{record['layers']} layers" if record.get("layers") else None,
            f"hidden size {record['hidden_size']}" if record.get("hidden_size") else None,
        )
        if part
    )
    name = (
        f"[`{hub_id}`](https://huggingface.co/{hub_id})"
        if hub_id
        else f"a local model (`{shown_path(str(record.get('id') or 'model'))}`)"
    )
    return f"{name} ({shape})" if shape else name


def _made_rows(manifest: Mapping[str, Any], search: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The "how it was made" rows of a mask: method, objective, sparsity, pattern, corpus,
    steps, seed, held-out loss."""
    method = manifest.get("method")
    report = manifest.get("sparsity_report") or {}
    objective = search.get("objective")
    corpus = search.get("corpus")
    datasets = search.get("datasets") or []
    loss = search.get("held_out_loss")
    return [
        ("base model", _base_text(manifest.get("model") or {})),
        ("method", f"`{method}`: {METHODS.get(str(method), 'a tamt plugin method')}"
         if method else None),
        ("label", f"`{manifest['label']}`" if manifest.get("label") else None),
        ("objective", f"`{objective}`: {OBJECTIVES.get(objective, objective)}"
         if objective else "none (no training)"),
        ("sparsity", _sparsity_text(manifest, (report.get("overall") or {}).get("sparsity"))),
        ("masked", _masked(manifest)),
        ("pattern", f"{manifest['pattern']} (N of every M consecutive weights kept)"
         if manifest.get("pattern") else _structure_text(manifest)),
        ("corpus", f"`{shown_path(corpus)}`"
         + (f" ({', '.join(datasets)} on the Hub)" if datasets else "") if corpus else None),
        ("steps", search.get("steps")),
        ("seed", manifest.get("seed")),
        ("held-out loss", f"{loss:.4f} ({objective} loss on held-out text, logged at step "
         f"{search.get('steps')} with the mask as it was training)"
         if loss is not None else None),
        ("tamt", __version__),
    ]  # fmt: skip


def _structure_text(manifest: Mapping[str, Any]) -> str:
    """``unstructured``, or the units a structured mask prunes and keeps in every layer."""
    units = (manifest.get("sparsity_report") or {}).get("units")
    if not units:
        return "unstructured"
    kept = ", ".join(f"{kept[0]} of {units['count'][kind]} {kind}"
                     for kind, kept in units["kept"].items())  # fmt: skip
    width = manifest.get("ffn_width")
    sliced = f"; the FFN matrices hold the {width} kept neurons only" if width else ""
    heads = "; pruned heads are zeros" if "heads" in units["kept"] else ""
    return f"whole units ({units['structure']}): {kept} kept in every layer{sliced}{heads}"


def _commands(commands: Sequence[str]) -> str:
    return "```bash\n" + "\n".join(commands) + "\n```"


def _citation() -> str:
    return (
        "## Citation\n\n"
        "The method and its baselines are from this paper:\n\n"
        f"```bibtex\n{CITATION}\n```"
    )


def _load_export(where: str | None, compressed: bool) -> str:
    """How to load an export (``where``: its hub repository, None: a local folder)."""
    folder = where or "path/to/this/folder"
    if compressed:
        fetch = f'folder = snapshot_download("{where}")\n' if where else f'folder = "{folder}"\n'
        imports = "from huggingface_hub import snapshot_download\n" if where else ""
        return (
            "The masked matrices are stored in compressed-tensors' `sparse-bitmask` layout "
            "(a bitmask and the kept values): **plain transformers cannot load this folder** "
            f"(see `{COMPRESSED_DOCS}` in tamt's repository). With tamt installed:\n\n"
            f"```python\n{imports}from tamt_cli.compressed import load_model\n\n{fetch}"
            "model = load_model(folder)  # the dense weights, zeros included\n```"
        )
    return (
        "The zeros are in the weights, so plain transformers loads it:\n\n"
        "```python\nfrom transformers import AutoModel, AutoTokenizer\n\n"
        f'model = AutoModel.from_pretrained("{folder}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{folder}")\n```'
    )


def export_card(manifest: Mapping[str, Any], push: Push | None = None) -> str:
    """The card of an exported subnetwork, from its manifest (kind ``subnetwork``, with the
    ``search`` record and ``commands`` of :func:`search_record` and :func:`previous_commands`)."""
    record = manifest.get("model") or {}
    method = manifest.get("method")
    search = manifest.get("search") or {}
    compressed = manifest.get("format") == "compressed"
    report = manifest.get("sparsity_report") or {}
    achieved = (report.get("overall") or {}).get("sparsity")
    hub_id = base_model(record)
    data = {
        "library_name": "transformers",
        "base_model": hub_id,
        "tags": _tags(method, True, *(["sparse-bitmask"] if compressed else [])),
        "datasets": search.get("datasets"),
        **base_license(record),
        "pipeline_tag": "feature-extraction",
    }
    level = f" at sparsity {achieved:.2f}" if achieved is not None else ""
    title = f"{_model_name(record)} subnetwork: {manifest.get('label') or method}{level}"
    how = METHODS.get(str(method), f"the method `{method}`")
    body = f"""
# {title}

A sparse subnetwork ("lottery ticket") of a pre-trained encoder, found by {how} with `tamt`,
which implements [Liu et al., 2022](https://aclanthology.org/2022.naacl-main.428). It is meant
to be fine-tuned on downstream tasks with its mask held fixed, in place of the dense model:
`tamt finetune FOLDER --task sst2` does that with this folder (or a download of it).
`masks.safetensors` holds the mask, `manifest.json` what made it.

## How it was made

{_rows(_made_rows(manifest, search))}

### Sparsity per kind of matrix

{_sparsity_kinds(report) or "Not recorded."}

## Commands

{_commands(manifest.get("commands") or ["(not recorded)"])}

## How to load

{_load_export(push.repo_id if push is not None else None, compressed)}

{_citation()}
"""
    return _card(data, body)


def _finetune_data(job: Any, search: Mapping[str, Any]) -> dict[str, Any]:
    """The front matter of a fine-tuned seed's card."""
    spec, task, link = job.spec, job.task, job.link
    record = link.get("model") or {}
    sparse = job.subject.masks is not None
    method = link.get("method")
    hub_dataset = getattr(task, "hub_path", None) if spec.data_dir is None else None
    datasets = [*(search.get("datasets") or []), *([hub_dataset] if hub_dataset else [])]
    return {
        "library_name": "transformers",
        "base_model": base_model(record),
        "tags": _tags(method, True, task.name) if sparse else ["tamt", task.name],
        "datasets": list(dict.fromkeys(datasets)),
        **base_license(record),
        "pipeline_tag": "question-answering" if task.head == "span" else "text-classification",
    }


def _finetune_rows(job: Any, seed: int, record: Mapping[str, Any]) -> list[tuple[str, Any]]:
    task, hp = job.task, job.hyperparameters
    hub_dataset = getattr(task, "hub_path", None) if job.spec.data_dir is None else None
    source = f" ({hub_dataset} on the Hub)" if hub_dataset else " (local files)"
    return [
        ("task", f"`{task.name}`{source}"),
        ("seed", seed),
        ("learning rate", hp.get("lr")),
        ("batch size", hp.get("batch_size")),
        ("epochs", hp.get("epochs")),
        ("steps", record.get("steps")),
        ("max length", hp.get("max_length")),
        ("training examples", record.get("train_examples")),
    ]


def finetune_card(job: Any, seed: int, record: Mapping[str, Any]) -> str:
    """The card of one fine-tuned seed of a ``tamt finetune`` run (``job``: its
    ``FinetuneJob``; ``record``: the seed's best and final scores, steps and examples)."""
    from tamt_cli.specs import FinetuneSpec

    spec, task, link = job.spec, job.task, job.link
    manifest = job.subject.manifest or {}
    folder = Path(spec.subnetwork)
    search = search_record(folder, manifest, _final_entry(manifest)) if manifest else {}
    commands = previous_commands(folder, manifest) if manifest else []
    values = spec.model_dump(mode="json")
    commands.append(command_line("finetune", FinetuneSpec, values, ("subnetwork",)))
    sparse = job.subject.masks is not None
    method = link.get("method")
    auto = "AutoModelForQuestionAnswering" if task.head == "span" else (
        "AutoModelForSequenceClassification")  # fmt: skip
    push = getattr(job, "push", None)
    where = "path/to/this/folder"
    if push is not None and (push.seed if push.seed is not None else spec.seeds[0]) == seed:
        where = push.repo_id
    what = f"{method} subnetwork" if sparse and method else "sparse model" if sparse else "model"
    held = "The mask was held fixed: pruned weights stayed exactly zero." if sparse else (
        "A dense model, fine-tuned as the baseline.")  # fmt: skip
    if manifest:
        about = _rows(_made_rows({**manifest, "method": method}, search))
    elif sparse:
        about = "A mask file over the model; what made the mask is not recorded."
    else:
        about = "A plain model, not pruned."
    kinds = _sparsity_kinds(manifest.get("sparsity_report"))
    kinds = f"### Sparsity per kind of matrix\n\n{kinds}" if kinds else ""
    body = f"""
# {_model_name(link.get("model") or {})}: {what} fine-tuned on {task.name}

{held} The weights here are those after the last step; `metrics.json` holds every evaluation,
`manifest.json` what made the model.

## Results ({task.eval_splits[0]} {task.main_metric} selects the best evaluation)

{_results(record)}

## Fine-tuning

{_rows(_finetune_rows(job, seed, record))}

## The subnetwork

{about}

{kinds}

## Commands

{_commands(commands)}

## How to load

```python
from transformers import {auto}, AutoTokenizer

model = {auto}.from_pretrained("{where}")
tokenizer = AutoTokenizer.from_pretrained("{where}")
```

{_citation()}
"""
    return _card(_finetune_data(job, search), body)


def _final_entry(manifest: Mapping[str, Any]) -> dict[str, Any]:
    entries = manifest.get("masks") or []
    finals = [e for e in entries if e.get("final")]
    return dict((finals or entries or [{}])[-1])


def _results(record: Mapping[str, Any]) -> str:
    """The seed's scores: per split and metric, the best evaluation's and the final one's."""
    best, final = record.get("best") or {}, record.get("final") or {}
    lines = [
        f"| split | metric | best (step {best.get('step')}) | final (step {final.get('step')}) |",
        "| --- | --- | ---: | ---: |",
    ]
    for split, metrics in (best.get("metrics") or {}).items():
        for name, value in metrics.items():
            last = ((final.get("metrics") or {}).get(split) or {}).get(name)
            lines.append(f"| {split} | {name} | {_number(value)} | {_number(last)} |")
    return "\n".join(lines)


def _number(value: Any) -> str:
    """A score as the tables show it (scores are in percent)."""
    return f"{value:.2f}" if isinstance(value, float) else str(value)
