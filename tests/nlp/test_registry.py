import importlib.util

import pytest

from bot.errors import ModelError
from nlp.classifiers import UnknownClassifierError, available_classifiers, make_classifier
from nlp.classifiers.rules import RulesClassifier


def test_rules_by_name():
    classifier = make_classifier("rules")
    assert isinstance(classifier, RulesClassifier)
    assert classifier.name == "rules"


def test_unknown_name_lists_the_known_ones():
    assert {"rules", "snownlp", "transformer"} <= set(available_classifiers())
    with pytest.raises(UnknownClassifierError, match="known classifiers: rules, snownlp"):
        make_classifier("bert-large")
    # Callers may catch either the livebot error or a plain ValueError.
    with pytest.raises(ModelError):
        make_classifier("nope")
    with pytest.raises(ValueError):
        make_classifier("nope")


def test_bad_option_is_a_value_error():
    with pytest.raises(ValueError, match="bad options"):
        make_classifier("rules", threshold=0.3)


@pytest.mark.skipif(
    importlib.util.find_spec("nlp.classifiers.transformer") is not None, reason="transformer is installed"
)
def test_missing_implementation_is_a_model_error():
    with pytest.raises(ModelError, match="not available"):
        make_classifier("transformer")
