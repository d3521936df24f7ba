"""Task metrics, every score in percent (×100), and a score's mean ± std over seeds.

GLUE scores come from scikit-learn and scipy (``accuracy_score``, binary ``f1_score`` with
positive label 1, ``matthews_corrcoef``, ``pearsonr``, ``spearmanr``). SQuAD exact match and F1
follow the official evaluation scripts (v1.1 and v2.0): answers are lower-cased, stripped of
ASCII punctuation and of the articles a/an/the, and whitespace-collapsed before comparing; an
example scores the maximum over its gold answers.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tamt_cli.errors import UserError
from tamt_cli.tasks.base import METRIC_SCALE

#: the GLUE metric keys this module knows
GLUE_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")


def class_predictions(predictions: Any, num_labels: int) -> Any:
    """Class ids from logits ``[N, num_labels]`` (or from ids ``[N]`` already)."""
    import numpy as np

    array = _single_array(predictions)
    if array.ndim == 2 and array.shape[1] == num_labels:
        return array.argmax(axis=-1)
    if array.ndim == 1:
        return array.astype(np.int64)
    raise UserError(
        f"predictions of shape {tuple(array.shape)} do not fit a {num_labels}-label task "
        f"(expected logits [N, {num_labels}])"
    )


def regression_predictions(predictions: Any) -> Any:
    """Scores ``[N]`` from ``[N]`` or ``[N, 1]``."""
    array = _single_array(predictions)
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    if array.ndim == 1:
        return array
    raise UserError(
        f"predictions of shape {tuple(array.shape)} do not fit a regression task "
        "(expected [N] or [N, 1])"
    )


def _single_array(predictions: Any) -> Any:
    import numpy as np

    if isinstance(predictions, (tuple, list)) and len(predictions) == 1:
        predictions = predictions[0]
    return np.asarray(predictions)


def glue_scores(names: Iterable[str], predictions: Any, labels: Any) -> dict[str, float]:
    """The named metrics of predicted vs gold labels (class ids, or scores for correlations)."""
    import numpy as np

    preds, gold = np.asarray(predictions), np.asarray(labels)
    if preds.shape != gold.shape:
        raise UserError(
            f"{preds.shape[0] if preds.ndim else 0} predictions for {gold.shape[0]} labels"
        )
    if gold.size == 0:
        raise UserError("no labelled examples to score")
    out: dict[str, float] = {}
    for name in names:
        out[name] = METRIC_SCALE * _glue_metric(name, preds, gold)
    return out


def _glue_metric(name: str, preds: Any, gold: Any) -> float:
    if name == "accuracy":
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(gold, preds))
    if name == "f1":
        from sklearn.metrics import f1_score

        return float(f1_score(gold, preds, zero_division=0.0))
    if name == "matthews_correlation":
        from sklearn.metrics import matthews_corrcoef

        return float(matthews_corrcoef(gold, preds))
    if name in ("pearson", "spearmanr"):
        import numpy as np
        from scipy.stats import pearsonr, spearmanr

        preds, gold = preds.astype(np.float64), gold.astype(np.float64)
        if np.ptp(preds) == 0 or np.ptp(gold) == 0:
            return 0.0  # undefined for a constant input: no correlation, like sklearn's MCC
        value = pearsonr(preds, gold)[0] if name == "pearson" else spearmanr(preds, gold)[0]
        return 0.0 if math.isnan(float(value)) else float(value)
    raise ValueError(f"unknown GLUE metric '{name}'")


# -- SQuAD ------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower, drop punctuation, drop articles, fix spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, v2: bool = False) -> float:
    """Token-overlap F1 of the official scripts. v2.0 scores two empty answers as 1 (a correct
    "no answer"); v1.1 scores any answer without overlap, empty ones included, as 0."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if v2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_answers(texts: Sequence[str], v2: bool) -> list[str]:
    """The gold answers an example is scored against; ``[""]`` for a no-answer question."""
    golds = [t for t in texts if normalize_answer(t)] if v2 else list(texts)
    return golds or [""]


def squad_scores(
    predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]], v2: bool = False
) -> dict[str, float]:
    """Exact match and F1 (percent) of ``{id: predicted text}`` against ``{id: gold texts}``.

    Every id in ``answers`` is scored (a missing prediction counts as ``""``). With ``v2`` the
    result also holds the official breakdown: ``has_ans_*`` over questions with an answer,
    ``no_ans_*`` over questions without one (where only an empty prediction is right), and the
    ``*_total`` counts."""
    if not answers:
        raise UserError("no examples to score")
    em: dict[str, float] = {}
    f1s: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    for qid, texts in answers.items():
        golds = gold_answers(texts, v2)
        pred = predictions.get(qid, "")
        em[qid] = max(exact_match(pred, g) for g in golds)
        f1s[qid] = max(f1(pred, g, v2) for g in golds)
        has_answer[qid] = golds != [""]
    out = {"exact_match": _mean(em.values()), "f1": _mean(f1s.values())}
    if v2:
        out["total"] = float(len(answers))
        for prefix, wanted in (("has_ans", True), ("no_ans", False)):
            ids = [q for q, h in has_answer.items() if h is wanted]
            out[f"{prefix}_total"] = float(len(ids))
            if ids:
                out[f"{prefix}_exact_match"] = _mean(em[q] for q in ids)
                out[f"{prefix}_f1"] = _mean(f1s[q] for q in ids)
    return out


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return METRIC_SCALE * sum(items) / len(items)


# -- over seeds -------------------------------------------------------------------------------


def over_seeds(values: Sequence[float]) -> dict[str, Any]:
    """A score's mean and sample standard deviation over seeds (None for one seed), how many
    and which, as ``tamt finetune`` and ``tamt report`` give them."""
    import statistics

    items = list(values)
    return {
        "mean": statistics.fmean(items),
        "std": statistics.stdev(items) if len(items) > 1 else None,
        "n": len(items),
        "values": items,
    }
