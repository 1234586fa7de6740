"""Classifier registry: `make_classifier(name, **options)` builds a classifier by its config name.

Implementations are imported only when asked for, so choosing "rules" never loads SnowNLP or torch.
A new classifier registers one line in `_FACTORIES`: its name, module and class.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from bot.errors import ModelError
from nlp.classifiers.base import SENTIMENTS, Classifier, Prediction, Sentiment

__all__ = [
    "SENTIMENTS",
    "Classifier",
    "Prediction",
    "Sentiment",
    "UnknownClassifierError",
    "available_classifiers",
    "make_classifier",
]

_FACTORIES: dict[str, tuple[str, str]] = {
    "rules": ("nlp.classifiers.rules", "RulesClassifier"),
    "snownlp": ("nlp.classifiers.snownlp_baseline", "SnowNLPClassifier"),
    # Added by the model issue: a local safetensors model, CPU, batched.
    "transformer": ("nlp.classifiers.transformer", "TransformerClassifier"),
}


class UnknownClassifierError(ModelError, ValueError):
    """No classifier is registered under the requested name."""


def available_classifiers() -> tuple[str, ...]:
    """Names `make_classifier` accepts."""
    return tuple(_FACTORIES)


def make_classifier(name: str, **options: Any) -> Classifier:
    """Build the classifier registered as name, passing options to its constructor.

    Raises:
        UnknownClassifierError: name is not registered (the message lists the known names).
        ModelError: the classifier's module or model cannot be loaded.
    """
    try:
        module_name, class_name = _FACTORIES[name]
    except KeyError:
        known = ", ".join(_FACTORIES)
        raise UnknownClassifierError(f"unknown classifier {name!r}; known classifiers: {known}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ModelError(
            f"classifier {name!r} is not available in this build ({module_name} is missing)"
        ) from exc
    factory = getattr(module, class_name)
    try:
        inspect.signature(factory).bind(**options)
    except TypeError as exc:
        raise ValueError(f"classifier {name!r}: bad options {sorted(options)}: {exc}") from None
    classifier: Classifier = factory(**options)
    return classifier
