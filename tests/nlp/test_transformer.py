"""TransformerClassifier: loading, batching, odd inputs and errors (a tiny random model, the shipped one)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from bot.errors import ModelError  # noqa: E402
from nlp.classifiers import make_classifier  # noqa: E402
from nlp.classifiers.base import Prediction  # noqa: E402
from nlp.classifiers.transformer import (  # noqa: E402
    MODEL_DIR,
    InferenceGraph,
    LiveCommentConfig,
    LiveCommentForSequenceClassification,
    TransformerClassifier,
    clip_text,
    compile_graph,
    hierarchical_logits,
)
from nlp.train import build_vocab, save_tokenizer  # noqa: E402

TEXTS = [
    "多少钱",
    "主播这件衣服质量太差了,洗一次就起球",
    "",
    "已拍",
    "160斤穿什么码?",
    "哈哈哈",
    "怎么还不发货",
    "好看",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised livecomment model with a char vocabulary, saved like a trained one."""
    out = tmp_path_factory.mktemp("tiny-model")
    torch.manual_seed(0)
    vocab = build_vocab(TEXTS * 2, min_count=1)
    config = LiveCommentConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=34,
        ngram_buckets=512,
        max_text_chars=32,
    )
    model = LiveCommentForSequenceClassification(config)
    # Non-zero n-gram weights, so the wide part is exercised too.
    torch.nn.init.normal_(model.ngrams.weight, std=0.5)
    model.save_pretrained(str(out), safe_serialization=True)
    save_tokenizer(vocab, out, 34)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> TransformerClassifier:
    return TransformerClassifier(str(tiny_dir), threads=1, batch_size=3)


def _valid(p: Prediction) -> None:
    assert len(p.sentiment_probs) == 3
    assert all(0.0 <= x <= 1.0 for x in p.sentiment_probs)
    assert math.isclose(sum(p.sentiment_probs), 1.0, abs_tol=1e-5)
    assert 0.0 <= p.confusion_score <= 1.0


def test_loads_from_a_directory_and_predicts(tiny: TransformerClassifier) -> None:
    preds = tiny.predict(TEXTS)
    assert len(preds) == len(TEXTS)
    for p in preds:
        _valid(p)
    assert tiny.name == "transformer"


def test_batch_out_order_equals_batch_in_order(tiny: TransformerClassifier) -> None:
    # batch_size=3 splits the input across several length-sorted forward passes.
    batch = tiny.predict(TEXTS)
    single = [tiny.predict([t])[0] for t in TEXTS]
    for b, s in zip(batch, single, strict=True):
        assert b.sentiment_probs == pytest.approx(s.sentiment_probs, abs=1e-5)
        assert b.confusion_score == pytest.approx(s.confusion_score, abs=1e-5)
    reversed_batch = tiny.predict(TEXTS[::-1])
    for r, b in zip(reversed_batch, batch[::-1], strict=True):
        assert r.sentiment_probs == pytest.approx(b.sentiment_probs, abs=1e-5)


@pytest.mark.parametrize("head", ["flat", "hierarchical"])
def test_inference_graph_gives_the_models_logits(tiny_dir: Path, head: str) -> None:
    # Every weight random (biases and layer norms too) and a calibration bias: the direct forward pass must
    # reproduce transformers' BertModel on a padded batch, not just on a freshly initialised model.
    net = LiveCommentForSequenceClassification.from_pretrained(str(tiny_dir))
    net.config.sentiment_head = head
    net.set_logit_bias([0.1, -0.2, 0.3, 0.4])
    net.set_temperature(1.6, 0.7)
    torch.manual_seed(3)
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.3)
    net.eval()
    assert InferenceGraph.supports(net)
    eager = InferenceGraph(net)
    compiled = compile_graph(InferenceGraph(net))
    assert isinstance(compiled, torch.jit.ScriptModule)  # the GIL-free path is the one the service runs
    lengths = [3, 9, 1, 6, 9]
    ids = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, net.config.vocab_size, (n,))
        mask[row, :n] = 1
    with torch.inference_mode():
        expected = net(input_ids=ids, attention_mask=mask).logits
        full = ids[[1, 4]]  # no padding at all: the mask-free attention path
        for graph in (eager, compiled, compiled):  # twice: TorchScript profiles the first runs
            assert torch.allclose(graph(ids, mask), expected, atol=1e-5)
            assert torch.allclose(graph(full, mask[[1, 4]]), net(input_ids=full).logits, atol=1e-5)


def test_temperature_divides_the_raw_logits_before_the_bias(tiny_dir: Path, tmp_path: Path) -> None:
    net = LiveCommentForSequenceClassification.from_pretrained(str(tiny_dir))
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        raw = net(input_ids=ids, attention_mask=mask).logits
        net.set_temperature(2.0, 4.0)
        net.set_logit_bias([0.0, 0.5, 0.0, -1.0])
        scaled = net(input_ids=ids, attention_mask=mask).logits
    expected = raw / torch.tensor([2.0, 2.0, 2.0, 4.0]) + torch.tensor([0.0, 0.5, 0.0, -1.0])
    assert torch.allclose(scaled, expected, atol=1e-6)
    # Saved with the weights, read back by the classifier (and a config without it means 1, 1).
    net.save_pretrained(str(tmp_path), safe_serialization=True)
    assert LiveCommentConfig.from_pretrained(str(tmp_path)).logit_temperature == [2.0, 4.0]
    assert LiveCommentConfig().logit_temperature == [1.0, 1.0]
    with pytest.raises(ValueError, match="logit_temperature"):
        LiveCommentConfig(logit_temperature=[1.0, 0.0])


def test_hierarchical_head_separates_neutrality_from_direction() -> None:
    torch.manual_seed(5)
    raw = torch.randn(6, 4, requires_grad=True)
    out = hierarchical_logits(raw)
    probs = torch.softmax(out[:, :3], dim=-1)
    assert torch.allclose(probs.sum(dim=-1), torch.ones(6))
    assert torch.allclose(probs, out[:, :3].exp(), atol=1e-6)  # already normalised log-probabilities
    assert torch.allclose(probs[:, 1], torch.sigmoid(raw[:, 1]), atol=1e-6)
    assert torch.equal(out[:, 3], raw[:, 3])
    # The review corpora's loss (neg vs pos only) must not move whether a comment is neutral.
    target = torch.tensor([0, 1, 1, 0, 1, 0])
    torch.nn.functional.cross_entropy(out[:, [0, 2]], target).backward()
    assert raw.grad is not None
    assert raw.grad[:, 1].abs().max() < 1e-7  # zero up to float rounding
    assert torch.count_nonzero(raw.grad[:, [0, 2]]) == 12
    with pytest.raises(ValueError, match="sentiment_head"):
        LiveCommentConfig(sentiment_head="tree")


def test_parallel_streams_keep_order_and_values(tiny_dir: Path, tiny: TransformerClassifier) -> None:
    streams = TransformerClassifier(str(tiny_dir), threads=2, batch_size=2)
    assert streams.streams == 2 and torch.get_num_threads() == 1
    texts = TEXTS * 5
    for a, b in zip(streams.predict(texts), tiny.predict(texts), strict=True):
        assert a.sentiment_probs == pytest.approx(b.sentiment_probs, abs=1e-5)
        assert a.confusion_score == pytest.approx(b.confusion_score, abs=1e-5)


def test_empty_long_and_emoji_texts(tiny: TransformerClassifier) -> None:
    assert tiny.predict([]) == []
    long_text = "质量很好" * 5000
    odd = ["", " ", "😂😂😂", "[捂脸]", "👍", long_text, "\u200b", "𠀀𠀁"]
    preds = tiny.predict(odd)
    assert len(preds) == len(odd)
    for p in preds:
        _valid(p)


def test_clip_text_keeps_head_and_tail() -> None:
    text = "头" * 100 + "中" * 100 + "尾" * 100
    clipped = clip_text(text, 30)
    assert len(clipped) == 30
    assert clipped.startswith("头" * 20) and clipped.endswith("尾" * 10)
    assert clip_text("短", 30) == "短"


def test_quantized_model_agrees(tiny_dir: Path, tiny: TransformerClassifier) -> None:
    quantized = TransformerClassifier(str(tiny_dir), threads=1, quantize=True)
    batch = quantized.predict(TEXTS)
    for a, b in zip(batch, tiny.predict(TEXTS), strict=True):
        _valid(a)
        assert a.sentiment_probs == pytest.approx(b.sentiment_probs, abs=0.05)
    # Dynamic quantisation scales activations per forward pass: order is kept, values move only slightly.
    for a, t in zip(batch, TEXTS, strict=True):
        assert a.sentiment_probs == pytest.approx(quantized.predict([t])[0].sentiment_probs, abs=1e-2)


def test_registry_builds_it(tiny_dir: Path) -> None:
    classifier = make_classifier("transformer", model=str(tiny_dir), threads=1)
    assert classifier.name == "transformer"
    assert len(classifier.predict(["好看", "多少钱"])) == 2


def test_missing_directory_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"classifier\.model"):
        TransformerClassifier(str(tmp_path / "nope"))


def test_hub_name_without_hub_access_names_the_setting() -> None:
    with pytest.raises(ModelError, match=r"classifier\.model.*allow_hub"):
        TransformerClassifier("someone/some-model", allow_hub=False)


def test_directory_without_a_model_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"classifier\.model.*config\.json"):
        TransformerClassifier(str(tmp_path))


def test_broken_weights_are_a_model_error(tiny_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=r"classifier\.model"):
        TransformerClassifier(str(broken))


@pytest.mark.skipif(not (MODEL_DIR / "model.safetensors").is_file(), reason="no shipped model")
def test_shipped_model_reads_live_comments() -> None:
    classifier = TransformerClassifier()
    assert (MODEL_DIR / "MODEL_CARD.md").is_file()
    size_mb = (MODEL_DIR / "model.safetensors").stat().st_size / 1e6
    assert size_mb <= 30
    texts = ["多少钱", "几号链接", "太贵了,质量也差", "主播好美,已拍", "来了"]
    preds = classifier.predict(texts)
    assert preds[0].confusion and preds[1].confusion
    assert preds[2].sentiment == "neg"
    assert preds[3].sentiment == "pos"
    assert not preds[4].confusion


def test_without_torchscript_the_eager_graph_runs(
    tiny_dir: Path, tiny: TransformerClassifier, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A torch whose TorchScript cannot compile the graph (it is deprecated upstream): same predictions,
    # one warning, no exception.
    def refuse(_module: object) -> object:
        raise RuntimeError("TorchScript is not available")

    monkeypatch.setattr(torch.jit, "script", refuse)
    eager = TransformerClassifier(str(tiny_dir), threads=1)
    assert isinstance(eager._graph, InferenceGraph)
    assert "running it eagerly" in caplog.text
    for a, b in zip(eager.predict(TEXTS), tiny.predict(TEXTS), strict=True):
        assert a.sentiment_probs == pytest.approx(b.sentiment_probs, abs=1e-5)
        assert a.confusion_score == pytest.approx(b.confusion_score, abs=1e-5)


def test_text_views_of_long_texts() -> None:
    from nlp.classifiers.transformer import MAX_WINDOWS, text_views

    assert text_views("短评", 8, 4) == ["短评"]
    text = "一二三四五六七八九十" * 3  # 30 characters
    assert text_views(text, 8, 0) == [clip_text(text, 8)]
    views = text_views(text, 8, 4)
    # The clip, then windows of 8 evenly spread from the first character to the last.
    assert views[0] == clip_text(text, 8) and len(views) == 1 + MAX_WINDOWS
    assert views[1] == text[:8] and views[-1] == text[-8:] and all(len(v) == 8 for v in views[1:])
    assert text_views(text[:10], 8, 64) == [clip_text(text[:10], 8), text[:8], text[2:10]]


def test_a_long_text_averages_its_views_whatever_its_batch(tiny_dir: Path) -> None:
    from nlp.classifiers.transformer import text_views

    long_text = "主播这件衣服质量太差了洗一次就起球" * 4 + "但是客服态度很好已经退货了" * 2
    plain = TransformerClassifier(str(tiny_dir), threads=1, batch_size=3)
    windows = TransformerClassifier(str(tiny_dir), threads=2, batch_size=3)
    windows.long_text_stride = 16
    views = text_views(long_text, windows.max_chars, 16)
    assert len(views) > 2
    # The view logits, averaged, give the long text's probabilities (the tiny model has no rules blend).
    with torch.inference_mode():
        logits = torch.cat([windows._forward(windows._encode([v])) for v in views]).mean(dim=0)
    expected = torch.softmax(logits[:3], dim=-1)
    batch = ["多少钱", long_text, "已拍", long_text[:20], long_text]
    got = windows.predict(batch)
    assert torch.allclose(torch.tensor(got[1].sentiment_probs), expected, atol=1e-5)
    alone = windows.predict([long_text])[0]

    def probs(p: Prediction) -> torch.Tensor:
        return torch.tensor([*p.sentiment_probs, p.confusion_score])

    assert torch.allclose(probs(got[1]), probs(got[4])) and torch.allclose(probs(got[1]), probs(alone), atol=1e-5)
    # Short texts are read as before; without a stride the long one is its clip alone.
    reference = plain.predict(batch)
    for i in (0, 2, 3):
        assert torch.allclose(probs(got[i]), probs(reference[i]), atol=1e-5)
    assert not torch.allclose(probs(got[1]), probs(reference[1]), atol=1e-5)
