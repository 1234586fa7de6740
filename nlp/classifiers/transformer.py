"""Transformer classifier: a small char-level BERT with a sentiment head and a confusion head, on CPU.

The model (``LiveCommentForSequenceClassification``) is one encoder plus a "wide" part: hashed character
n-grams (uni/bi/tri-grams, including the [CLS]/[SEP] boundaries) whose learned weights are added to the
logits, fastText-style. The encoder reads order and context (吗 at the end, 不 before 好看); the n-gram
table memorises the phrases that decide long reviews. Both live in one ``PreTrainedModel`` saved with
safetensors, so ``AutoModelForSequenceClassification.from_pretrained(dir)`` loads it once this module
has been imported (it registers the config and model classes).

Logits are ``[neg, neu, pos, confusion]``: a softmax over the first three, a sigmoid on the fourth. Any
other AutoModelForSequenceClassification checkpoint with the same 4-logit layout works too.

The shipped weights live in ``nlp/models/livecomment-zh/`` (built by ``livebot train``; see MODEL_CARD.md).
"""

from __future__ import annotations

import logging
import threading
import warnings
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertModel,
    PreTrainedModel,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging as hf_logging

from bot.errors import ModelError
from nlp.classifiers.base import SHIPPED_MODEL_DIR, Prediction
from nlp.classifiers.rules import RulesClassifier

log = logging.getLogger(__name__)

MODEL_DIR = SHIPPED_MODEL_DIR
"""The model shipped with livebot (package data next to this module's package)."""
MODEL_SETTING = "classifier.model"
"""The config key users set to choose a model; errors name it."""

NUM_LOGITS = 4
"""neg, neu, pos, confusion."""
_MAX_TOKENS = 8192
_WIDTH_SLACK = 1.3
_NGRAM_PRIMES = (1_000_003, 998_244_353, 19_260_817, 1_000_000_007)


def hashed_ngram_logits(
    ids: torch.Tensor, valid: torch.Tensor, table: torch.Tensor, buckets: int, orders: list[int], primes: list[int]
) -> torch.Tensor:
    """Mean of the hashed n-gram rows of `table` over every window that lies inside the text.

    One function for training and for the (TorchScript-compiled) inference graph, so the hashing is the same.
    """
    total, count = hashed_ngram_sums(ids, valid, table, buckets, orders, primes)
    return total / count.clamp_min(1.0)


def hashed_ngram_sums(
    ids: torch.Tensor, valid: torch.Tensor, table: torch.Tensor, buckets: int, orders: list[int], primes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the hashed n-gram rows of `table` [N, L], number of windows [N, 1]) over the text's windows."""
    total = torch.zeros(ids.shape[0], table.shape[1], dtype=table.dtype, device=ids.device)
    count = torch.zeros(ids.shape[0], 1, dtype=table.dtype, device=ids.device)
    for h, ok in ngram_hashes(ids, valid, buckets, orders, primes):
        weights = F.embedding(h, table) * ok.unsqueeze(-1).to(table.dtype)
        total = total + weights.sum(dim=1)
        count = count + ok.sum(dim=1, keepdim=True).to(table.dtype)
    return total, count


def feature_sums(feature_ids: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the rows of `table` [N, L], how many [N, 1]) for padded feature ids [N, F] (padding is -1)."""
    ok = feature_ids >= 0
    weights = F.embedding(feature_ids.clamp_min(0), table) * ok.unsqueeze(-1).to(table.dtype)
    return weights.sum(dim=1), ok.sum(dim=1, keepdim=True).to(table.dtype)


def linear_logits_of(
    ids: torch.Tensor,
    valid: torch.Tensor,
    word_ids: Optional[torch.Tensor],  # noqa: UP045 - TorchScript reads this annotation
    table: torch.Tensor,
    buckets: int,
    orders: list[int],
    primes: list[int],
) -> torch.Tensor:
    """The linear model: mean of its table's rows over the character n-grams and (if given) the word features."""
    total, count = hashed_ngram_sums(ids, valid, table, buckets, orders, primes)
    if word_ids is not None:
        word_total, word_count = feature_sums(word_ids, table)
        total, count = total + word_total, count + word_count
    return total / count.clamp_min(1.0)


def word_features(text: str, buckets: int) -> list[int]:
    """Buckets of a (normalised, clipped) text's jieba words and word bigrams, text boundaries included.

    crc32 of the word, so a word lands in the same bucket in every process, in training and at run time.
    `nlp.segment.cut` caches its result, so the Analyzer's keyword extraction reuses the segmentation.
    """
    from nlp import segment

    words = ["^", *segment.cut(text), "$"]
    keys = [f"w{w}" for w in words] + [f"b{a}|{b}" for a, b in zip(words, words[1:], strict=False)]
    return [zlib.crc32(k.encode("utf-8")) % buckets for k in keys]


def words_of(texts: Sequence[str], buckets: int, max_chars: int) -> list[list[int]]:
    """The linear model's word features of each text, from the text clipped as the character ids are."""
    return [word_features(clip_text(t, max_chars), buckets) for t in texts]


def pad_features(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Feature-id lists as one [N, F] tensor, -1 where a row is shorter."""
    out = torch.full((len(rows), max((len(r) for r in rows), default=0)), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def ngram_hashes(
    ids: torch.Tensor, valid: torch.Tensor, buckets: int, orders: list[int], primes: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per order, (bucket of every window [N, W], window lies inside the text [N, W])."""
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    for order in orders:
        width = ids.shape[1] - order + 1
        if width > 0:
            # Reduce after every step so the products stay far from int64 overflow.
            h = torch.full_like(ids[:, :width], order * 7919)
            ok = torch.ones_like(valid[:, :width])
            for k in range(order):
                h = torch.remainder(h * primes[k] + ids[:, k : k + width], buckets)
                ok = ok & valid[:, k : k + width]
            out.append((h, ok))
    return out


SENTIMENT_HEADS = ("flat", "hierarchical")


def hierarchical_logits(raw: torch.Tensor) -> torch.Tensor:
    """Read raw [neg, neu, pos, confusion] outputs as two decisions: neutral or not, then pos vs neg.

    P(neu) = σ(r_neu) and P(pos | not neutral) = σ(r_pos − r_neg); returns the log-probabilities of neg,
    neu, pos (a softmax of them gives the probabilities back) and the confusion logit unchanged. The
    binary review corpora, trained on neg vs pos only, then move only the direction r_pos − r_neg: a
    review's strong 不 → negative cannot decide whether a live comment carries sentiment at all; only the
    3-way live data teaches that.
    """
    polar = F.logsigmoid(-raw[:, 1])
    direction = raw[:, 2] - raw[:, 0]
    return torch.stack(
        [polar + F.logsigmoid(-direction), F.logsigmoid(raw[:, 1]), polar + F.logsigmoid(direction), raw[:, 3]],
        dim=1,
    )


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[CLS ‖ mean over the text's tokens]: what the heads read, in training and in the inference graph."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return torch.cat([hidden[:, 0], mean], dim=-1)


class LiveCommentConfig(BertConfig):
    """BERT config plus the wide n-gram part and the pooling of the heads."""

    model_type = "livecomment_bert"

    def __init__(
        self,
        ngram_buckets: int = 0,
        ngram_orders: Sequence[int] = (1, 2, 3),
        max_text_chars: int = 96,
        rules_blend: Sequence[float] | None = None,
        rules_blend_length: float = 0.0,
        long_text_stride: int = 0,
        logit_bias: Sequence[float] | None = None,
        logit_temperature: Sequence[float] | None = None,
        sentiment_head: str = "flat",
        linear_buckets: int = 0,
        linear_orders: Sequence[int] = (1, 2, 3, 4),
        linear_mix: float = 1.0,
        linear_words: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("num_labels", NUM_LOGITS)
        super().__init__(**kwargs)
        self.ngram_buckets = int(ngram_buckets)
        """Hash buckets of the n-gram table (0 = no wide part)."""
        self.ngram_orders = [int(n) for n in ngram_orders]
        self.max_text_chars = int(max_text_chars)
        """Texts longer than this keep their head and tail (the verdict of a review is often at the end)."""
        self.rules_blend = [float(w) for w in rules_blend] if rules_blend else None
        """(sentiment, confusion) weights of the rules classifier's log-odds added at inference, fitted on
        the training validation split by `nlp.train`; None = the model alone."""
        self.rules_blend_length = float(rules_blend_length)
        """Texts longer than this many characters get the rules' sentiment weight × length / len(text): the
        rules read a few cues built for short live comments, which say less about a long review the model
        has read whole. Fitted on the review corpora's validation split by `nlp.train` (sentiment only, so
        the confusion weight stays whole: a question cue is one at any length); 0 = full weight at every
        length."""
        self.long_text_stride = int(long_text_stride)
        """Texts over max_text_chars are also read in windows this far apart, logits averaged (`text_views`);
        0 = head + tail only. Training reads the clip; `nlp.train` calibrates on the views, as they run."""
        self.logit_bias = [float(b) for b in logit_bias] if logit_bias else [0.0] * NUM_LOGITS
        """Constant added to the logits (calibration fitted on the validation split; zero in training)."""
        self.logit_temperature = [float(t) for t in logit_temperature] if logit_temperature else [1.0, 1.0]
        """(sentiment, confusion) temperatures the raw logits are divided by before `logit_bias` (fitted on
        the validation split by negative log-likelihood; 1 in training). Training leaves the model
        over-confident, which hides the low-confidence analyses that should go to a human."""
        if len(self.logit_temperature) != 2 or min(self.logit_temperature) <= 0:
            raise ValueError(f"logit_temperature must be two positive numbers, got {self.logit_temperature}")
        if sentiment_head not in SENTIMENT_HEADS:
            raise ValueError(f"sentiment_head must be one of {SENTIMENT_HEADS}, got {sentiment_head!r}")
        self.sentiment_head = sentiment_head
        """flat: one softmax over neg/neu/pos; hierarchical: see `hierarchical_logits`."""
        self.linear_buckets = int(linear_buckets)
        """Hash buckets of the separately trained linear n-gram model (0 = none; see `nlp.train`)."""
        self.linear_orders = [int(n) for n in linear_orders]
        self.linear_mix = float(linear_mix)
        """Weight of the linear model's logits in the sum with the encoder's (fitted on validation)."""
        self.linear_words = bool(linear_words)
        """The linear model also reads jieba words and word bigrams (`word_features`, passed as `word_ids`)."""
        if max(self.ngram_orders + self.linear_orders, default=0) > len(_NGRAM_PRIMES):
            raise ValueError(f"n-gram orders above {len(_NGRAM_PRIMES)} are not supported")

    def logit_scale(self) -> list[float]:
        """Per-logit factor [1/Ts, 1/Ts, 1/Ts, 1/Tc] applied to the raw logits."""
        t_sent, t_conf = self.logit_temperature
        return [1.0 / t_sent] * 3 + [1.0 / t_conf]


class LiveCommentForSequenceClassification(PreTrainedModel):
    """Char-level BERT encoder + hashed n-gram logits → [neg, neu, pos, confusion] logits."""

    config_class = LiveCommentConfig
    base_model_prefix = "bert"
    _no_split_modules: list[str] = []

    def __init__(self, config: LiveCommentConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.head = nn.Linear(2 * config.hidden_size, NUM_LOGITS)
        self.ngrams = nn.Embedding(config.ngram_buckets, NUM_LOGITS) if config.ngram_buckets else None
        self.linear_ngrams = nn.Embedding(config.linear_buckets, NUM_LOGITS) if config.linear_buckets else None
        self.post_init()

    def set_logit_bias(self, bias: Sequence[float]) -> None:
        """Set the calibration bias; it lives in the config, so save_pretrained keeps it."""
        self.config.logit_bias = [float(b) for b in bias]

    def set_temperature(self, sentiment: float, confusion: float) -> None:
        """Set the calibration temperatures (kept in the config like the bias)."""
        self.config.logit_temperature = [float(sentiment), float(confusion)]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self.ngrams or module is self.linear_ngrams:
            nn.init.zeros_(module.weight)

    def ngram_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of the hashed n-gram weights over every window that lies inside the text."""
        assert self.ngrams is not None
        return hashed_ngram_logits(
            input_ids.long(), attention_mask != 0, self.ngrams.weight, self.config.ngram_buckets,
            list(self.config.ngram_orders), list(_NGRAM_PRIMES),
        )

    @property
    def reads_words(self) -> bool:
        """Whether forward needs `word_ids` (the linear model reads jieba words and is in the sum)."""
        return self.linear_ngrams is not None and bool(self.config.linear_mix) and self.config.linear_words

    def linear_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The separately trained linear model's logits (before `linear_mix`)."""
        assert self.linear_ngrams is not None
        return linear_logits_of(
            input_ids.long(), attention_mask != 0, word_ids if self.config.linear_words else None,
            self.linear_ngrams.weight, self.config.linear_buckets, list(self.config.linear_orders),
            list(_NGRAM_PRIMES),
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Logits [N, 4]. `word_ids` ([N, F], -1 = padding; see `word_features`) is required when
        `reads_words`: the tokenizer gives characters only, TransformerClassifier adds the words."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if word_ids is None and self.reads_words:
            raise ValueError(
                "this model's linear part reads jieba words: pass word_ids (pad_features of word_features "
                "per text), or classify through nlp.classifiers.transformer.TransformerClassifier"
            )
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool_hidden(hidden, attention_mask)
        logits = self.head(self.dropout(pooled))
        if self.ngrams is not None:
            logits = logits + self.ngram_logits(input_ids, attention_mask)
        if self.linear_ngrams is not None and self.config.linear_mix:
            logits = logits + self.config.linear_mix * self.linear_logits(input_ids, attention_mask, word_ids)
        if self.config.sentiment_head == "hierarchical":
            logits = hierarchical_logits(logits)
        scale = self.config.logit_scale()
        if any(f != 1.0 for f in scale):
            logits = logits * torch.tensor(scale, dtype=logits.dtype)
        if any(self.config.logit_bias):
            # Built per call from the config: from_pretrained creates modules on the meta device, which
            # would leave a buffer made in __init__ uninitialised.
            logits = logits + torch.tensor(self.config.logit_bias, dtype=logits.dtype)
        return SequenceClassifierOutput(logits=logits)


AutoConfig.register(LiveCommentConfig.model_type, LiveCommentConfig, exist_ok=True)
AutoModelForSequenceClassification.register(LiveCommentConfig, LiveCommentForSequenceClassification, exist_ok=True)


def blend_with_rules(
    logits: torch.Tensor,
    rules: Sequence[Prediction],
    weights: Sequence[float],
    lengths: Sequence[int] | None = None,
    length_scale: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Late fusion: model log-probabilities plus weighted rules log-probabilities (and confusion log-odds).

    With `length_scale` L > 0 and the texts' `lengths`, a text longer than L characters gets the sentiment
    weight × L / length (see `LiveCommentConfig.rules_blend_length`).
    Returns (sentiment probabilities [N, 3], confusion probabilities [N]).
    """
    evidence = rules_evidence(rules, weights, lengths, length_scale, logits.dtype)
    sentiment = torch.log_softmax(logits[:, :3], dim=-1) + evidence[:, :3]
    confusion = logits[:, 3] + evidence[:, 3]
    return torch.softmax(sentiment, dim=-1), torch.sigmoid(confusion)


def rules_evidence(
    rules: Sequence[Prediction],
    weights: Sequence[float],
    lengths: Sequence[int] | None = None,
    length_scale: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """[N, 4] what the fusion adds to the model's outputs: the rules' sentiment log-probabilities × the
    sentiment weight (× L / length beyond `length_scale` L) and their confusion log-odds × the confusion
    weight (also what `rules_prior` training adds to the logits)."""
    factor = torch.ones(len(rules), dtype=dtype)
    if length_scale > 0 and lengths is not None:
        length = torch.tensor(list(lengths), dtype=dtype)
        factor = length_scale / length.clamp_min(length_scale)
    w_sent, w_conf = float(weights[0]) * factor, float(weights[1])
    rules_probs = torch.tensor([p.sentiment_probs for p in rules], dtype=dtype).clamp_min(1e-6)
    rules_conf = torch.tensor([p.confusion_score for p in rules], dtype=dtype).clamp(1e-6, 1 - 1e-6)
    evidence = torch.empty(len(rules), 4, dtype=dtype)
    evidence[:, :3] = w_sent[:, None] * torch.log(rules_probs)
    evidence[:, 3] = w_conf * torch.logit(rules_conf)
    return evidence


class InferenceGraph(nn.Module):
    """The forward pass of a `LiveCommentForSequenceClassification` for inference, with the same weights.

    transformers' BertModel spends ~1.5 ms per call in Python (mask preparation, attention dispatch, three
    separate Q/K/V projections): as much as the arithmetic for a chunk of 30 short comments. This module
    calls the tensor functions directly, with Q/K/V packed into one matrix product, and is compiled with
    TorchScript where available, so a whole pass runs without the GIL: in the service, inference then
    does not wait for the event loop's Python between operations. The logits equal the model's to float
    rounding (tests compare them). Built once after loading; the packed Q/K/V weights are copies, so the
    model must not be trained afterwards.
    """

    def __init__(self, net: LiveCommentForSequenceClassification) -> None:
        super().__init__()
        cfg = net.config
        self.hidden = int(cfg.hidden_size)
        self.heads = int(cfg.num_attention_heads)
        self.eps = float(cfg.layer_norm_eps)
        emb = net.bert.embeddings
        self.word = emb.word_embeddings.weight.detach()
        self.position = emb.position_embeddings.weight.detach()
        self.token_type = emb.token_type_embeddings.weight[0].detach()
        self.emb_norm_w = emb.LayerNorm.weight.detach()
        self.emb_norm_b = emb.LayerNorm.bias.detach()
        # Per layer: qkv_w, qkv_b, out_w, out_b, norm1_w, norm1_b, in_w, in_b, ffn_w, ffn_b, norm2_w, norm2_b.
        self.layers: list[list[torch.Tensor]] = []
        for layer in net.bert.encoder.layer:
            att = layer.attention
            self.layers.append(
                [
                    torch.cat([att.self.query.weight, att.self.key.weight, att.self.value.weight]).detach(),
                    torch.cat([att.self.query.bias, att.self.key.bias, att.self.value.bias]).detach(),
                    att.output.dense.weight.detach(),
                    att.output.dense.bias.detach(),
                    att.output.LayerNorm.weight.detach(),
                    att.output.LayerNorm.bias.detach(),
                    layer.intermediate.dense.weight.detach(),
                    layer.intermediate.dense.bias.detach(),
                    layer.output.dense.weight.detach(),
                    layer.output.dense.bias.detach(),
                    layer.output.LayerNorm.weight.detach(),
                    layer.output.LayerNorm.bias.detach(),
                ]
            )
        self.head_w = net.head.weight.detach()
        self.head_b = net.head.bias.detach()
        self.has_ngrams = net.ngrams is not None
        self.ngram_table = net.ngrams.weight.detach() if net.ngrams is not None else torch.zeros(1, NUM_LOGITS)
        self.buckets = int(cfg.ngram_buckets)
        self.orders: list[int] = [int(n) for n in cfg.ngram_orders]
        self.primes: list[int] = list(_NGRAM_PRIMES)
        self.has_linear = net.linear_ngrams is not None and cfg.linear_mix != 0.0
        self.linear_table = (
            net.linear_ngrams.weight.detach() if net.linear_ngrams is not None else torch.zeros(1, NUM_LOGITS)
        )
        self.linear_buckets = int(cfg.linear_buckets)
        self.linear_orders: list[int] = [int(n) for n in cfg.linear_orders]
        self.linear_mix = float(cfg.linear_mix)
        self.linear_words = bool(getattr(cfg, "linear_words", False))
        self.hierarchical = cfg.sentiment_head == "hierarchical"
        self.scale = torch.tensor(cfg.logit_scale(), dtype=self.word.dtype)
        self.bias = torch.tensor(cfg.logit_bias, dtype=self.word.dtype)

    @staticmethod
    def supports(net: nn.Module) -> bool:
        """Only our own BERT layout (absolute positions, exact GELU); anything else runs the model itself."""
        if not isinstance(net, LiveCommentForSequenceClassification):
            return False
        cfg = net.config
        return (
            cfg.hidden_act == "gelu"
            and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
            and cfg.hidden_size % cfg.num_attention_heads == 0
            and max(cfg.ngram_orders + cfg.linear_orders, default=0) <= len(_NGRAM_PRIMES)
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_ids: Optional[torch.Tensor] = None,  # noqa: UP045 - TorchScript reads this annotation
    ) -> torch.Tensor:
        batch, width = input_ids.shape[0], input_ids.shape[1]
        hidden, heads = self.hidden, self.heads
        x = F.embedding(input_ids, self.word) + (self.position[:width] + self.token_type)
        x = F.layer_norm(x, [hidden], self.emb_norm_w, self.emb_norm_b, self.eps)
        valid = attention_mask != 0
        keys: Optional[torch.Tensor] = None  # noqa: UP045 - TorchScript reads this annotation
        if not bool(valid.all()):
            keys = valid[:, None, None, :]
        for w in self.layers:
            qkv = F.linear(x, w[0], w[1]).view(batch, width, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
            ctx = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keys)
            ctx = ctx.transpose(1, 2).reshape(batch, width, hidden)
            x = F.layer_norm(F.linear(ctx, w[2], w[3]) + x, [hidden], w[4], w[5], self.eps)
            ffn = F.linear(F.gelu(F.linear(x, w[6], w[7])), w[8], w[9])
            x = F.layer_norm(ffn + x, [hidden], w[10], w[11], self.eps)
        logits = F.linear(pool_hidden(x, attention_mask), self.head_w, self.head_b)
        if self.has_ngrams:
            logits = logits + hashed_ngram_logits(
                input_ids.long(), valid, self.ngram_table, self.buckets, self.orders, self.primes
            )
        if self.has_linear:
            logits = logits + self.linear_mix * linear_logits_of(
                input_ids.long(), valid, word_ids if self.linear_words else None, self.linear_table,
                self.linear_buckets, self.linear_orders, self.primes,
            )
        if self.hierarchical:
            logits = hierarchical_logits(logits)
        return logits * self.scale + self.bias


def compile_graph(graph: InferenceGraph) -> nn.Module:
    """TorchScript the graph (no GIL during a pass); the eager module where TorchScript is unavailable."""
    script = getattr(getattr(torch, "jit", None), "script", None)
    if script is None:
        return graph
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream; it still compiles this
        try:
            return script(graph)
        except Exception as exc:  # noqa: BLE001 - any compiler failure leaves the eager module, which is correct
            log.warning("TorchScript could not compile the inference graph (%s); running it eagerly", exc)
            return graph


def clip_text(text: str, max_chars: int) -> str:
    """Keep the head and the tail of an over-long text (2/3 head, 1/3 tail)."""
    if len(text) <= max_chars:
        return text
    head = (max_chars * 2) // 3
    return text[:head] + text[len(text) - (max_chars - head) :]


MAX_WINDOWS = 3
"""Most sliding windows read of one long text (besides its head + tail clip)."""


def text_views(text: str, max_chars: int, stride: int) -> list[str]:
    """What the model reads of a text: the text itself, or for a text over max_chars its head + tail clip
    and, with stride > 0, windows of max_chars about `stride` apart (at most MAX_WINDOWS, spread evenly
    from the first character to the last), whose logits are averaged — so a verdict in the middle of a
    long review is read too."""
    if len(text) <= max_chars or stride <= 0:
        return [clip_text(text, max_chars)]
    last = len(text) - max_chars
    count = min(MAX_WINDOWS, -(-last // stride) + 1)
    starts = sorted({round(i * last / (count - 1)) for i in range(count)}) if count > 1 else [0]
    return [clip_text(text, max_chars), *(text[s : s + max_chars] for s in starts)]


def average_views(view_logits: torch.Tensor, views: Sequence[Sequence[str]]) -> torch.Tensor:
    """Per text, the mean of its views' logits ([sum of views, L] in `views` order → [texts, L])."""
    if view_logits.shape[0] == len(views):
        return view_logits
    owner = torch.tensor([i for i, group in enumerate(views) for _ in group])
    counts = torch.tensor([len(group) for group in views], dtype=view_logits.dtype)
    total = torch.zeros(len(views), view_logits.shape[1], dtype=view_logits.dtype)
    return total.index_add_(0, owner, view_logits) / counts[:, None]


def resolve_model(model: str | Path | None, *, allow_hub: bool) -> tuple[str, bool]:
    """Where to load from: (path or hub name, is_local). Empty means the shipped model.

    Raises:
        ModelError: the directory does not exist (or is not a model) and hub loading is off.
    """
    if model is None or str(model).strip() == "":
        path = MODEL_DIR
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{MODEL_SETTING}: the shipped model is missing from {path}; "
                "run `livebot train` or set classifier.model to a model directory"
            )
        return str(path), True
    text = str(model).strip()
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{MODEL_SETTING}: {text!r} is a directory but holds no config.json")
        return str(path), True
    looks_local = path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1
    if looks_local or not allow_hub:
        hint = "" if looks_local else " and hub loading is off (classifier.allow_hub = false)"
        raise ModelError(f"{MODEL_SETTING}: no model directory at {text!r}{hint}")
    return text, False


def _quantize(net: nn.Module) -> tuple[nn.Module, bool]:
    """Dynamic int8 quantisation of the Linear layers; (net, False) where torch no longer offers it."""
    quantize_dynamic = getattr(getattr(torch, "ao", None), "quantization", None)
    quantize_dynamic = getattr(quantize_dynamic, "quantize_dynamic", None)
    if quantize_dynamic is None:
        log.warning("torch has no torch.ao.quantization.quantize_dynamic; the model runs in float32")
        return net, False
    with warnings.catch_warnings():
        # torch.ao's eager quantisation is deprecated in favour of torchao, which we don't ship.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        try:
            return quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8), True
        except (RuntimeError, NotImplementedError) as exc:
            log.warning("int8 quantisation failed (%s); the model runs in float32", exc)
            return net, False


class TransformerClassifier:
    """Batched CPU inference with a livecomment model (or any 4-logit sequence classifier).

    Args:
        model: a local model directory or hub name; empty = the shipped model.
        allow_hub: let transformers fetch ``model`` from the hub (off = offline only).
        threads: CPU threads for inference. Each runs its own forward passes over a share of the batch's
            length-sorted chunks, with torch's intra-op threads set to 1 (process-wide): for a model this
            small, splitting every matrix product between cores costs more in synchronisation than it saves
            (one stream on 2 threads ~3,600 comments/s, two streams of 1 thread ~4,700/s). None leaves
            torch's setting alone and runs one stream.
        batch_size: most texts in one forward pass; a larger input is split.
        quantize: dynamic int8 quantisation of the Linear layers: same accuracy on the eval files and
            ~5-10% faster on an AVX-only CPU (more with AVX2/VNNI), but activations are scaled per forward
            pass, so a text's probabilities move by ~1e-4 with the other texts in its batch. Off by default
            because replay must give the same analyses whatever the batching. Falls back to float32 if
            torch lacks it.
        rules: fuse the rules classifier's evidence when the model's config carries blend weights.
    """

    name = "transformer"

    def __init__(
        self,
        model: str | Path | None = "",
        *,
        allow_hub: bool = False,
        threads: int | None = 2,
        batch_size: int = 256,
        quantize: bool = False,
        rules: bool = True,
    ) -> None:
        self.streams = 1 if threads is None else max(1, int(threads))
        if threads is not None:
            torch.set_num_threads(1)
        source, local = resolve_model(model, allow_hub=allow_hub)
        # A "Loading weights" progress bar per load is noise on a service's terminal and in eval output.
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local or not allow_hub)
            net = AutoModelForSequenceClassification.from_pretrained(source, local_files_only=local or not allow_hub)
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{MODEL_SETTING}: cannot load model {source!r}: {reason}") from exc
        if net.config.num_labels != NUM_LOGITS:
            raise ModelError(
                f"{MODEL_SETTING}: model {source!r} has {net.config.num_labels} labels, "
                f"expected {NUM_LOGITS} (neg, neu, pos, confusion)"
            )
        net.eval()
        self.quantized = False
        if quantize:
            net, self.quantized = _quantize(net)
        self.model = net
        self._graph = (
            compile_graph(InferenceGraph(net)).eval() if not self.quantized and InferenceGraph.supports(net) else None
        )
        self._pool = (
            ThreadPoolExecutor(self.streams, thread_name_prefix="livebot-infer") if self.streams > 1 else None
        )
        self.source = source
        self.batch_size = max(1, int(batch_size))
        self.max_chars = int(getattr(net.config, "max_text_chars", 0) or 0) or 510
        self.long_text_stride = int(getattr(net.config, "long_text_stride", 0) or 0)
        self._backend = getattr(self.tokenizer, "backend_tokenizer", None)
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        # Models whose linear part reads jieba words get them here; the tokenizer gives characters only.
        self._word_buckets = int(net.config.linear_buckets) if getattr(net, "reads_words", False) else 0
        self._lock = threading.Lock()
        if self._graph is not None:
            # TorchScript profiles and optimises a graph on its first two runs (~60 ms): do that here, not
            # on a live room's first comments.
            warm_texts = ["好", "在吗"]
            warm = self._encode(warm_texts)
            for _ in range(2):
                self._forward(warm, self._words(warm_texts))
        blend = getattr(net.config, "rules_blend", None)
        self.rules_blend: list[float] | None = list(blend) if rules and blend else None
        self._rules: RulesClassifier | None = RulesClassifier() if self.rules_blend else None
        self.rules_blend_length = float(getattr(net.config, "rules_blend_length", 0.0) or 0.0)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        clipped = [clip_text(t, self.max_chars) for t in texts]
        if self._backend is not None:
            return [enc.ids for enc in self._backend.encode_batch(clipped)]
        return [list(ids) for ids in self.tokenizer(clipped)["input_ids"]]

    def _words(self, texts: Sequence[str]) -> list[list[int]] | None:
        """The linear part's word features per text (None when the model reads characters only)."""
        if not self._word_buckets:
            return None
        return words_of(texts, self._word_buckets, self.max_chars)

    def _forward(self, ids: list[list[int]], words: list[list[int]] | None = None) -> torch.Tensor:
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        word_ids = pad_features(words) if words is not None else None
        with torch.inference_mode():  # thread-local: entered in the stream that runs the pass
            if self._graph is not None:
                return self._graph(input_ids, mask, word_ids).float()
            return self.model(input_ids=input_ids, attention_mask=mask, word_ids=word_ids).logits.float()

    def _chunks(self, ids: Sequence[Sequence[int]]) -> list[list[int]]:
        """Forward passes as index lists: length-sorted, each padded to a near-equal width.

        Live comments are 3-35 tokens; one pass over a whole batch would pad every comment to the longest
        one (4x the work on average), so a pass ends when the width grows past `_WIDTH_SLACK` of its first
        text, when it holds `batch_size` texts, or when it reaches `_MAX_TOKENS` padded tokens.
        """
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        chunks: list[list[int]] = []
        chunk: list[int] = []
        first = 0
        for i in order:
            width = len(ids[i])
            if chunk and (
                len(chunk) >= self.batch_size
                or (len(chunk) + 1) * width > _MAX_TOKENS
                or width > first * _WIDTH_SLACK + 2
            ):
                chunks.append(chunk)
                chunk = []
            if not chunk:
                first = width
            chunk.append(i)
        if chunk:
            chunks.append(chunk)
        return chunks

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Classify normalised texts; output order equals input order."""
        if not texts:
            return []
        # Usually one view per text; a long text may be several (`text_views`), their logits averaged.
        views = [text_views(t, self.max_chars, self.long_text_stride) for t in texts]
        flat = [v for group in views for v in group]
        ids = self._encode(flat)
        with self._lock:
            chunks = self._chunks(ids)
            batches = [[ids[i] for i in chunk] for chunk in chunks]
            futures = {}
            if self._pool is not None and len(chunks) > 1:
                # Largest passes first, so the streams finish close together; each pass's words are cut
                # just before it is submitted, so the streams start after one chunk's segmentation.
                by_cost = sorted(range(len(batches)), key=lambda k: -len(batches[k]) * len(batches[k][-1]))
                for k in by_cost:
                    words = self._words([flat[i] for i in chunks[k]])
                    futures[k] = self._pool.submit(self._forward, batches[k], words)
            # The rules are plain Python: they run here while the streams do the arithmetic.
            rules = self._rules.predict(texts) if self._rules is not None else None
            if futures:
                passes = [futures[k].result() for k in range(len(batches))]
            else:
                passes = [
                    self._forward(b, self._words([flat[i] for i in chunk]))
                    for chunk, b in zip(chunks, batches, strict=True)
                ]
        with torch.inference_mode():
            view_logits = torch.empty(len(flat), NUM_LOGITS)
            for chunk, logits in zip(chunks, passes, strict=True):
                view_logits[torch.tensor(chunk)] = logits
            logits = average_views(view_logits, views)
            if rules is not None and self.rules_blend is not None:
                probs, confusion = blend_with_rules(
                    logits, rules, self.rules_blend, [len(t) for t in texts], self.rules_blend_length
                )
            else:
                probs, confusion = torch.softmax(logits[:, :3], dim=-1), torch.sigmoid(logits[:, 3])
            probs_list = probs.tolist()
            conf_list = confusion.tolist()
        return [
            Prediction(sentiment_probs=(p[0], p[1], p[2]), confusion_score=c)
            for p, c in zip(probs_list, conf_list, strict=True)
        ]
