"""A seeded, realistic live-commerce room for the demo and for tests (DESIGN.md *Sources*).

`Simulator` is a pure generator: the same seed gives the same Events. It plays a show that loops
every `LOOP_S` seconds through the segments of a run-sheet (开场 → 产品讲解 → 价格揭晓 → 尺码答疑 →
逼单 → 福利互动 → 售后保障), each with its own mix of comment topics and engagement. The price reveal
sets off a burst of price and coupon questions that decays over about a minute (peaking near 10× the
base rate, ~50/s at the default 5/s); the online count moves in slow waves and the comment rate follows
it. Every loop features the next product of the catalogue. Viewers come from a fixed pool of returning
fans (the same raw ids in every session, so returning viewers can be counted) and a stream of new guests.

`SimulatorSource` plays the generator in real time on a Clock, one batch per 100 ms tick.

The Chinese comment templates below are authored for this simulator (not sampled from any dataset).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from bot.clock import Clock
from bot.events import Event, EventKind, SystemEvent
from bot.privacy import ViewerHasher
from bot.sources.base import Emit, SourceState, SourceStatus

PLATFORM = "simulator"
DEFAULT_START_TS = 1_767_268_800_000
"""2026-01-01 20:00 China Standard Time, the start of `Simulator.events()` unless given."""
TICK_MS = 100
"""Generation step and the real-time batch interval of SimulatorSource."""
STATS_EVERY_MS = 5_000
BURST_FACTOR = 9.0
"""Peak extra comment rate right after the price reveal, as a multiple of the base rate."""
BURST_TAU_S = 20.0
"""Decay time of the post-reveal burst."""
BURST_LENGTH_S = 120.0
RETURNING_FANS = 400
CHATTY_FANS = 40
_SIMULATOR_SALT = b"livebot-simulator-viewers"
"""Salt for `Simulator.events()` without a hasher: simulated viewers are not people."""


class Phase(StrEnum):
    """Show segments, named as in the run-sheets of scripts_library/."""

    OPENING = "开场"
    PRODUCT = "产品讲解"
    PRICE_REVEAL = "价格揭晓"
    SIZE = "尺码答疑"
    PUSH = "逼单"
    WELFARE = "福利互动"
    AFTER_SALES = "售后保障"


class Category(StrEnum):
    """What a simulated comment is about: the ground-truth label of `labelled_events()`."""

    GREETING = "greeting"
    EMOTE = "emote"
    HOST_CHAT = "host_chat"
    PRODUCT_Q = "product_q"
    PRICE_Q = "price_q"
    COUPON_Q = "coupon_q"
    SIZE_Q = "size_q"
    STOCK_Q = "stock_q"
    LINK_Q = "link_q"
    SHIPPING_Q = "shipping_q"
    SHIPPING_COMPLAINT = "shipping_complaint"
    DISTRUST = "distrust"
    AFTER_SALES_Q = "after_sales_q"
    PRAISE = "praise"
    BUYING_INTENT = "buying_intent"


QUESTION_CATEGORIES = frozenset(
    {
        Category.PRODUCT_Q,
        Category.PRICE_Q,
        Category.COUPON_Q,
        Category.SIZE_Q,
        Category.STOCK_Q,
        Category.LINK_Q,
        Category.SHIPPING_Q,
        Category.AFTER_SALES_Q,
    }
)

# --- data: comment templates (slots in braces are filled per comment) ---------------------------------------

TEMPLATES: Mapping[Category, tuple[str, ...]] = {
    Category.GREETING: (
        "来了来了", "来啦来啦{emote}", "晚上好", "主播晚上好", "姐妹们晚上好", "又来报到了", "打卡",
        "今日打卡{emote}", "刚下班就赶过来了", "来晚了来晚了", "第一次进直播间", "从{city}来支持一下",
        "主播好呀", "大家好", "准时来蹲播", "终于等到开播了", "每天都来看你", "老粉来了",
    ),
    Category.EMOTE: (
        "{emote}", "{emote}{emote}", "{emote}{emote}{emote}", "666", "6666666", "哈哈哈哈哈", "👍👍👍",
        "[赞][赞][赞]", "[玫瑰]{emote}", "❤️❤️", "冲鸭{emote}", "[比心]",
    ),
    Category.HOST_CHAT: (
        "主播好美", "主播今天的妆好好看", "主播声音真好听", "主播辛苦了", "主播喝口水歇一下",
        "背景音乐叫什么名字", "主播多高呀", "主播多少斤", "主播身上穿的是几号链接", "今天几点下播",
        "昨天怎么没播呀", "助理小姐姐也好看", "主播是哪里人", "主播口红什么色号",
        "主播的耳环好看，有链接吗", "主播头发在哪做的",
    ),
    Category.PRODUCT_Q: (
        "{product}是什么面料", "是纯棉的吗", "洗了会起球吗", "会不会掉色", "透不透啊", "厚不厚",
        "{color}还有吗", "一共几个颜色", "可以机洗吗", "冬天穿会冷吗", "有没有弹力", "里面有没有内衬",
        "容易皱吗", "显胖吗", "适合{age}岁穿吗", "梨形身材能穿吗", "胯宽的能穿吗", "小个子穿会拖地吗",
        "腰围是多少", "衣长多少厘米", "袖子长不长", "{color}显黑吗", "洗了会缩水吗", "穿着扎不扎",
        "有没有异味", "能不能看看{color}的上身效果",
    ),
    Category.PRICE_Q: (
        "多少钱", "多少钱啊", "这个多少钱", "{product}多少钱", "到手价多少", "到手多少钱", "价格多少",
        "价格呢？", "今天什么价", "怎么这么贵", "还能便宜点吗", "比昨天便宜吗", "直播间什么价",
        "原价多少", "现在拍多少钱", "两件多少钱", "买两件有优惠吗", "包邮吗", "{price}包邮吗",
        "是{price}吗", "刚才说多少钱没听清", "价格再说一遍", "报个价呗", "多少米",
        "链接上怎么是{list_price}", "直播间和店铺价格一样吗",
    ),
    Category.COUPON_Q: (
        "有券吗", "有没有优惠券", "怎么领券", "券在哪里领", "券领不了", "领不到券啊", "券没了",
        "券都抢完了", "还会再发券吗", "什么时候发券", "能再上点券吗", "新人券能用吗", "满减怎么算",
        "券后多少钱", "用了{coupon}元券是多少", "福袋什么时候开", "红包什么时候发", "还有别的优惠吗",
        "券能叠加吗", "抢不到券怎么办",
    ),
    Category.SIZE_Q: (
        "{weight}斤穿什么码", "{height} {weight}斤穿什么码", "{height}cm{weight}斤选哪个码", "{size}有吗",
        "有{size}吗", "{size}还有吗", "有没有大码", "{weight}斤能穿吗", "偏大还是偏小", "尺码标准吗",
        "平时穿{size}拍哪个码", "腰围{waist}穿什么码", "{weight}斤拍{size}可以吗",
        "身高{height}穿会不会太长", "码数怎么选", "主播穿的什么码", "要不要拍大一码", "微胖选什么码",
        "胸大的选什么码", "{height}的穿{size}合适吗", "有没有{size}码的", "{weight}斤{height}求推荐尺码",
    ),
    Category.STOCK_Q: (
        "还有货吗", "{color}{size}还有吗", "没库存了吗", "怎么显示已售罄", "什么时候补货", "还会返场吗",
        "还剩多少件", "能不能加点库存", "没抢到怎么办", "{color}是不是没了",
    ),
    Category.LINK_Q: (
        "几号链接", "在哪里拍", "链接在哪", "怎么拍啊", "小黄车第几个", "拍哪个链接", "链接上了吗",
        "找不到链接", "{n}号链接是这个吗", "怎么下单", "上链接啊", "快上链接",
    ),
    Category.SHIPPING_Q: (
        "什么时候发货", "几天能发货", "发什么快递", "能发{city}吗", "{city}包邮吗", "今天拍明天能发吗",
        "到{city}要几天", "有运费险吗", "偏远地区包邮吗", "是现货吗", "预售要等多久", "顺丰可以吗",
    ),
    Category.SHIPPING_COMPLAINT: (
        "怎么还不发货", "拍了{days}天了还没发货", "快递太慢了", "物流一直不动",
        "上次买的等了{days}天才到", "发货也太慢了吧", "能不能催一下发货", "客服一直不回消息",
        "物流{days}天没更新了", "说好48小时发货呢", "等得花都谢了", "快递到现在还没揽收",
    ),
    Category.DISTRUST: (
        "是正品吗", "别是假货吧", "质量怎么样", "和图片一样吗", "有没有色差", "上次买的洗一次就起球了",
        "买过一次质量一般", "不会是骗人的吧", "直播间的和店里是一样的货吗", "卖家秀和买家秀差别大吗",
        "感觉不值这个价", "线头有点多", "有质检报告吗", "这么便宜能好吗", "面料摸着有点薄",
        "图片是不是修过",
    ),
    Category.AFTER_SALES_Q: (
        "能退换吗", "支持七天无理由吗", "不合适能退吗", "退货运费谁出", "尺码不合适可以换吗", "售后找谁",
        "退款多久到账", "有没有运费险", "退货地址在哪", "拆了吊牌还能退吗",
    ),
    Category.PRAISE: (
        "好看", "好好看", "太好看了", "真好看{emote}", "这个颜色绝了", "好显瘦", "质感不错",
        "主播穿着真好看", "版型好好", "上身效果好好", "爱了爱了", "喜欢", "这件不错", "被种草了",
        "比上次那件好看", "{color}好温柔", "回购第二件了", "买过，真的好穿",
    ),
    Category.BUYING_INTENT: (
        "已拍", "已拍{emote}", "拍了", "扣1", "1", "11111", "上车", "已上车", "买了", "已下单",
        "拍了两件", "拍了{color}{size}", "冲", "冲冲冲", "想要", "我要我要", "给我留一件", "蹲", "蹲返场",
        "已付款", "拍了{n}号", "已拍，快发货",
    ),
}  # fmt: skip

EMOTES = ("[赞]", "[玫瑰]", "[爱心]", "[比心]", "[鼓掌]", "[666]", "[捂脸]", "[笑哭]", "[送心]",
          "👍", "❤️", "🌹", "😂", "🔥", "🙏", "👏")  # fmt: skip
COLORS = ("黑色", "白色", "杏色", "燕麦色", "雾霾蓝", "酒红色", "卡其色", "奶白色", "灰色", "藏青色")
SIZES = ("S", "M", "L", "XL", "2XL", "3XL", "4XL")
CITIES = ("新疆", "西藏", "内蒙古", "海南", "哈尔滨", "广州", "上海", "成都", "青海", "甘肃", "大连", "昆明")
WAISTS = ("1尺9", "2尺", "2尺1", "2尺2", "2尺3", "2尺4", "2尺5", "2尺6", "2尺8")


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    price: int
    """Live-room price revealed in 价格揭晓, CNY yuan."""
    list_price: int


PRODUCTS = (
    Product("法式碎花连衣裙", 129, 299),
    Product("加厚连帽羽绒服", 299, 699),
    Product("高腰阔腿牛仔裤", 89, 199),
    Product("软糯针织开衫", 109, 259),
    Product("宽松加绒卫衣", 79, 169),
    Product("中长款双排扣风衣", 239, 499),
    Product("休闲运动套装", 149, 329),
    Product("百褶半身裙", 69, 159),
)

# (name, unit value in CNY yuan, relative weight)
GIFTS = (
    ("小心心", 0.1, 30.0), ("玫瑰", 0.1, 25.0), ("人气票", 0.1, 15.0), ("棒棒糖", 0.9, 10.0),
    ("鲜花", 1.0, 8.0), ("加油鸭", 1.5, 5.0), ("墨镜", 9.9, 3.0), ("礼花筒", 19.9, 2.0),
    ("跑车", 120.0, 0.6), ("嘉年华", 300.0, 0.2),
)  # fmt: skip
_NICK_HEADS = ("小", "阿", "大", "甜甜", "木子", "橙子", "晴天", "柠檬", "一只", "momo")
_NICK_TAILS = ("北", "青", "熊", "兔兔", "鱼", "酱", "宝", "猫", "不吃香菜", "爱购物")
LIVE_START_TEXT = "直播开始"


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """One segment of the show loop: its length, comment mix and engagement multipliers."""

    phase: Phase
    duration_s: int
    rate: float
    """Comment rate multiplier."""
    weights: Mapping[Category, float]
    enter: float = 1.0
    like: float = 1.0
    gift: float = 1.0
    follow: float = 1.0
    share: float = 1.0
    online: float = 1.0


C = Category
SHOW: tuple[PhaseSpec, ...] = (
    PhaseSpec(Phase.OPENING, 45, 0.7,
              {C.GREETING: 35, C.EMOTE: 12, C.HOST_CHAT: 15, C.PRAISE: 5, C.PRODUCT_Q: 5, C.PRICE_Q: 6,
               C.LINK_Q: 3, C.SHIPPING_COMPLAINT: 3, C.SHIPPING_Q: 3, C.BUYING_INTENT: 3, C.DISTRUST: 2,
               C.COUPON_Q: 4, C.SIZE_Q: 4},
              enter=1.6, like=0.8, gift=0.6, follow=1.2, share=0.8, online=0.85),
    PhaseSpec(Phase.PRODUCT, 75, 0.9,
              {C.PRODUCT_Q: 25, C.PRAISE: 12, C.PRICE_Q: 10, C.SIZE_Q: 10, C.DISTRUST: 8, C.HOST_CHAT: 6,
               C.GREETING: 6, C.EMOTE: 6, C.COUPON_Q: 4, C.SHIPPING_Q: 4, C.SHIPPING_COMPLAINT: 3,
               C.LINK_Q: 3, C.STOCK_Q: 2, C.BUYING_INTENT: 2},
              like=0.8, gift=0.8, share=0.8),
    PhaseSpec(Phase.PRICE_REVEAL, 60, 1.1,
              {C.PRICE_Q: 20, C.COUPON_Q: 18, C.LINK_Q: 10, C.BUYING_INTENT: 14, C.STOCK_Q: 6, C.PRAISE: 6,
               C.DISTRUST: 6, C.SIZE_Q: 6, C.EMOTE: 5, C.GREETING: 3, C.SHIPPING_Q: 3, C.PRODUCT_Q: 3},
              enter=1.2, share=1.5, online=1.15),
    PhaseSpec(Phase.SIZE, 55, 1.0,
              {C.SIZE_Q: 40, C.STOCK_Q: 8, C.PRODUCT_Q: 10, C.BUYING_INTENT: 8, C.PRAISE: 6, C.PRICE_Q: 6,
               C.COUPON_Q: 4, C.GREETING: 4, C.EMOTE: 4, C.LINK_Q: 4, C.AFTER_SALES_Q: 3, C.DISTRUST: 3},
              enter=0.9, like=0.8, gift=0.8, follow=0.8, share=0.7, online=1.05),
    PhaseSpec(Phase.PUSH, 45, 1.2,
              {C.BUYING_INTENT: 30, C.STOCK_Q: 12, C.LINK_Q: 10, C.COUPON_Q: 8, C.PRICE_Q: 8, C.SIZE_Q: 8,
               C.EMOTE: 8, C.PRAISE: 6, C.SHIPPING_Q: 5, C.DISTRUST: 3, C.GREETING: 2},
              like=1.2, gift=1.5, online=1.1),
    PhaseSpec(Phase.WELFARE, 60, 1.3,
              {C.EMOTE: 20, C.BUYING_INTENT: 20, C.GREETING: 10, C.COUPON_Q: 12, C.PRAISE: 10, C.HOST_CHAT: 8,
               C.PRICE_Q: 5, C.LINK_Q: 5, C.SHIPPING_COMPLAINT: 3, C.STOCK_Q: 3, C.PRODUCT_Q: 4},
              enter=1.3, like=3.5, gift=2.0, follow=2.5, share=3.0, online=1.2),
    PhaseSpec(Phase.AFTER_SALES, 50, 0.8,
              {C.AFTER_SALES_Q: 20, C.SHIPPING_Q: 16, C.SHIPPING_COMPLAINT: 14, C.DISTRUST: 12,
               C.PRODUCT_Q: 8, C.SIZE_Q: 6, C.PRAISE: 6, C.BUYING_INTENT: 6, C.GREETING: 4, C.EMOTE: 4,
               C.PRICE_Q: 4},
              enter=0.8, like=0.7, gift=0.8, follow=0.8, share=0.6, online=0.9),
)  # fmt: skip
BURST_WEIGHTS: Mapping[Category, float] = {
    C.PRICE_Q: 45, C.COUPON_Q: 30, C.LINK_Q: 8, C.STOCK_Q: 5, C.BUYING_INTENT: 12,
}  # fmt: skip
del C

LOOP_S = sum(spec.duration_s for spec in SHOW)
"""Length of one show loop in seconds (6.5 minutes)."""
REVEAL_OFFSET_S = sum(s.duration_s for s in SHOW[: [s.phase for s in SHOW].index(Phase.PRICE_REVEAL)])
"""Seconds from the start of a loop to its price reveal."""

# Per-second base rates of non-comment events, before phase multipliers and the online wave.
ENTER_RATE = 1.5
LIKE_RATE = 2.0
GIFT_RATE = 0.12
FOLLOW_RATE = 0.06
SHARE_RATE = 0.03

_SLOT_RE = re.compile(r"\{(\w+)\}")


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method; the per-tick means here stay small (well under 50)."""
    if lam <= 0:
        return 0
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _weighted(rng: random.Random, weights: Mapping[Category, float]) -> Category:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


@dataclass(slots=True)
class _Pending:
    offset_ms: int
    seq: int
    event: Event
    category: Category | None


class _Room:
    """Mutable state of one generation run (viewers present, totals); owned by one generator."""

    def __init__(self, sim: Simulator, rng: random.Random, start_ts: int, hasher: ViewerHasher) -> None:
        self.sim = sim
        self.rng = rng
        self.start_ts = start_ts
        self.hasher = hasher
        self.hashed: dict[str, str | None] = {}
        self.guests = 0
        self.seq = 0
        self.fans = [f"fan-{i:04d}" for i in range(RETURNING_FANS)]
        # Viewers already in the room when the simulation starts.
        self.present = [self.new_viewer() for _ in range(60)] + rng.sample(self.fans, 40)
        self.viewers_total = len(self.present)
        self.likes_total = 0

    def new_viewer(self) -> str:
        self.guests += 1
        return f"guest-{self.sim.seed}-{self.guests}"

    def user(self, raw_id: str) -> tuple[str | None, str | None]:
        if raw_id not in self.hashed:
            self.hashed[raw_id] = self.hasher(PLATFORM, raw_id)
        return self.hashed[raw_id], _nickname(raw_id) if self.sim.store_names else None

    def commenter(self) -> str:
        if self.rng.random() < 0.25:
            return self.fans[self.rng.randrange(CHATTY_FANS)]
        return self.present[self.rng.randrange(len(self.present))]

    def enter(self) -> str:
        viewer = (
            self.fans[self.rng.randrange(RETURNING_FANS)] if self.rng.random() < 0.3 else self.new_viewer()
        )
        self.present.append(viewer)
        if len(self.present) > 3000:
            del self.present[:1000]  # people leave; keep the pool bounded
        self.viewers_total += 1
        return viewer

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


def _nickname(raw_id: str) -> str:
    digest = hashlib.blake2s(raw_id.encode(), digest_size=4).digest()
    return _NICK_HEADS[digest[0] % len(_NICK_HEADS)] + _NICK_TAILS[digest[1] % len(_NICK_TAILS)]


class Simulator:
    """Deterministic generator of a live-commerce room; same seed, same Events."""

    def __init__(
        self,
        seed: int = 0,
        rate: float = 5.0,
        room: str = "demo",
        start_ts: int = DEFAULT_START_TS,
        *,
        online: int = 800,
        store_names: bool = False,
        hasher: ViewerHasher | None = None,
    ) -> None:
        """
        Args:
            rate: base comments per second (the post-reveal burst adds up to `BURST_FACTOR`× on top).
            online: typical online viewer count; the waves move around it.
            hasher: hashes the simulated viewer ids in `events()`; default: a fixed simulator salt.
        """
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number of comments per second, got {rate!r}")
        if online < 1:
            raise ValueError(f"online must be at least 1, got {online!r}")
        self.seed = seed
        self.rate = rate
        self.room = room
        self.start_ts = start_ts
        self.online = online
        self.store_names = store_names
        self._hasher = hasher if hasher is not None else ViewerHasher(_SIMULATOR_SALT)
        phases = random.Random(f"waves:{seed}")
        self._wave_phase = (phases.uniform(0, 2 * math.pi), phases.uniform(0, 2 * math.pi))
        self._product_shift = seed % len(PRODUCTS)

    # --- the script, as pure functions of the show time t (seconds since start) ---

    @staticmethod
    def spec_at(t: float) -> PhaseSpec:
        offset = t % LOOP_S
        for spec in SHOW:
            if offset < spec.duration_s:
                return spec
            offset -= spec.duration_s
        return SHOW[-1]

    def phase_at(self, t: float) -> Phase:
        """Show segment at `t` seconds after the start."""
        return self.spec_at(t).phase

    def phase_at_ts(self, ts: int) -> Phase:
        return self.phase_at((ts - self.start_ts) / 1000)

    def product_at(self, t: float) -> Product:
        """The product featured in the show loop running at `t` seconds."""
        return PRODUCTS[(int(t // LOOP_S) + self._product_shift) % len(PRODUCTS)]

    @staticmethod
    def reveal_times(duration_s: float) -> list[float]:
        """Seconds after the start at which a price reveal begins, within `duration_s`."""
        return [k * LOOP_S + REVEAL_OFFSET_S for k in range(int(duration_s // LOOP_S) + 1)
                if k * LOOP_S + REVEAL_OFFSET_S < duration_s]  # fmt: skip

    def activity(self, t: float) -> float:
        """Online-count shape around 1.0: slow waves, a warm-up, and the segment's pull (smoothed)."""
        a, b = self._wave_phase
        wave = 1 + 0.22 * math.sin(2 * math.pi * t / 240 + a) + 0.08 * math.sin(2 * math.pi * t / 67 + b)
        warm_up = min(1.0, 0.7 + t / 400)
        # Blend the segment multiplier over the first 20 s of a segment, so the count drifts, not jumps.
        spec = self.spec_at(t)
        since = self._since_phase_start(t)
        previous = self.spec_at(t - since - 0.001) if t - since > 0 else spec
        blend = min(1.0, since / 20)
        pull = previous.online + (spec.online - previous.online) * blend
        return wave * warm_up * pull

    @staticmethod
    def _since_phase_start(t: float) -> float:
        offset = t % LOOP_S
        for spec in SHOW:
            if offset < spec.duration_s:
                return offset
            offset -= spec.duration_s
        return offset

    def comment_rate(self, t: float) -> float:
        """Expected comments per second at `t`, burst included."""
        return self.rate * self.spec_at(t).rate * self.activity(t) + self._burst_rate(t)

    def _burst_rate(self, t: float) -> float:
        since_reveal = (t - REVEAL_OFFSET_S) % LOOP_S
        if t < REVEAL_OFFSET_S or since_reveal >= BURST_LENGTH_S:
            return 0.0
        return self.rate * BURST_FACTOR * math.exp(-since_reveal / BURST_TAU_S)

    # --- generation ---

    def events(self, duration_s: float) -> Iterator[Event]:
        """The room's Events from `start_ts` for `duration_s` seconds, in time order."""
        for event, _ in self.labelled_events(duration_s):
            yield event

    def labelled_events(self, duration_s: float) -> Iterator[tuple[Event, Category | None]]:
        """Like `events()`, with each comment's topic category (None for other kinds)."""
        return self.stream(start_ts=self.start_ts, hasher=self._hasher, duration_s=duration_s)

    def stream(
        self, *, start_ts: int, hasher: ViewerHasher, duration_s: float | None = None
    ) -> Iterator[tuple[Event, Category | None]]:
        """The generator behind `events()`: any start and hasher; endless when `duration_s` is None."""
        rng = random.Random(self.seed)
        room = _Room(self, rng, start_ts, hasher)
        yield self._event(room, 0, EventKind.SYSTEM, event=SystemEvent.LIVE_START, text=LIVE_START_TEXT), None
        end_ms = None if duration_s is None else round(duration_s * 1000)
        tick_ms = 0
        while end_ms is None or tick_ms < end_ms:
            batch = self._tick(room, tick_ms)
            batch.sort(key=lambda p: (p.offset_ms, p.seq))
            for pending in batch:
                if end_ms is not None and pending.offset_ms >= end_ms:
                    continue
                yield pending.event, pending.category
            tick_ms += TICK_MS

    def _event(self, room: _Room, offset_ms: int, kind: EventKind, **fields: object) -> Event:
        ts = room.start_ts + offset_ms
        return Event(
            platform=PLATFORM,
            room=self.room,
            kind=kind,
            ts=ts,
            received_ts=ts,
            msg_id=f"sim-{self.seed}-{room.start_ts}-{room.next_seq()}",  # unique across restarts
            **fields,  # type: ignore[arg-type]
        )

    def _tick(self, room: _Room, tick_ms: int) -> list[_Pending]:
        rng = room.rng
        t = tick_ms / 1000
        dt = TICK_MS / 1000
        spec = self.spec_at(t)
        activity = self.activity(t)
        out: list[_Pending] = []

        def add(kind: EventKind, category: Category | None, fields: dict[str, object]) -> None:
            offset = tick_ms + rng.randrange(TICK_MS)
            event = self._event(room, offset, kind, **fields)
            out.append(_Pending(offset, room.seq, event, category))

        def by(raw_id: str, **fields: object) -> dict[str, object]:
            fields["user_id"], fields["user_name"] = room.user(raw_id)
            return fields

        base_rate = self.rate * spec.rate * activity
        comments = [_weighted(rng, spec.weights) for _ in range(_poisson(rng, base_rate * dt))]
        comments += [_weighted(rng, BURST_WEIGHTS) for _ in range(_poisson(rng, self._burst_rate(t) * dt))]
        for category in comments:
            text = self._render(rng, category, t)
            add(EventKind.CHAT, category, by(room.commenter(), text=text))

        for _ in range(_poisson(rng, ENTER_RATE * spec.enter * activity * dt)):
            add(EventKind.ENTER, None, by(room.enter()))
        for _ in range(_poisson(rng, LIKE_RATE * spec.like * activity * dt)):
            # Taps come in bursts; 福利互动 (点赞到1万) makes them longer.
            count = 1 + int(rng.expovariate(1 / (6 * spec.like)))
            room.likes_total += count
            add(EventKind.LIKE, None, by(room.commenter(), count=count))
        for _ in range(_poisson(rng, GIFT_RATE * spec.gift * activity * dt)):
            name, unit, _ = rng.choices(GIFTS, weights=[g[2] for g in GIFTS])[0]
            count = rng.choice((1, 1, 1, 1, 2, 3, 5, 10)) if unit < 1 else 1
            value = round(unit * count, 2)
            add(EventKind.GIFT, None, by(room.commenter(), gift_name=name, count=count, value=value))
        for _ in range(_poisson(rng, FOLLOW_RATE * spec.follow * activity * dt)):
            add(EventKind.FOLLOW, None, by(room.commenter()))
        for _ in range(_poisson(rng, SHARE_RATE * spec.share * activity * dt)):
            add(EventKind.SHARE, None, by(room.commenter()))

        if tick_ms % STATS_EVERY_MS == 0:
            online = max(1, round(self.online * activity * rng.uniform(0.97, 1.03)))
            stats = {"online": online, "viewers_total": room.viewers_total, "likes_total": room.likes_total}
            event = self._event(room, tick_ms, EventKind.STATS, stats=stats)
            out.append(_Pending(tick_ms, room.seq, event, None))
        return out

    def _render(self, rng: random.Random, category: Category, t: float) -> str:
        product = self.product_at(t)
        fillers: dict[str, Callable[[], str]] = {
            "emote": lambda: rng.choice(EMOTES),
            "city": lambda: rng.choice(CITIES),
            "product": lambda: product.name,
            "price": lambda: str(product.price),
            "list_price": lambda: str(product.list_price),
            "color": lambda: rng.choice(COLORS),
            "size": lambda: rng.choice(SIZES),
            "weight": lambda: str(rng.randrange(85, 185, 5)),
            "height": lambda: str(rng.randrange(150, 179)),
            "waist": lambda: rng.choice(WAISTS),
            "age": lambda: str(rng.randrange(18, 61, 5)),
            "coupon": lambda: str(rng.choice((5, 10, 20, 30, 50))),
            "n": lambda: str(rng.randrange(1, 31)),
            "days": lambda: str(rng.randrange(3, 11)),
        }
        template = rng.choice(TEMPLATES[category])
        text = _SLOT_RE.sub(lambda m: fillers[m.group(1)](), template)
        roll = rng.random()
        if category in QUESTION_CATEGORIES and roll < 0.06:
            text = "@主播 " + text
        elif roll < 0.14 and category not in (Category.EMOTE,):
            text += rng.choice(EMOTES)
        elif roll < 0.18 and len(text) <= 4:
            text = text * 2  # 多少钱多少钱, 冲冲冲冲
        elif roll < 0.24 and category in QUESTION_CATEGORIES and text[-1] not in "？?吗呢":
            text += rng.choice(("？", "?", "呢", "啊"))
        return text


class SimulatorSource:
    """Plays a Simulator in real time: every ~100 ms tick emits the events that fell due."""

    def __init__(self, sim: Simulator, clock: Clock, hasher: ViewerHasher) -> None:
        self.sim = sim
        self._clock = clock
        self._hasher = hasher
        self.status = SourceStatus(name="simulator", platform=PLATFORM, room=sim.room)
        self._start_ms: int | None = None
        self._started = False
        self._stop_requested = False
        self._sleeper: asyncio.Future[None] | None = None

    @property
    def phase(self) -> Phase | None:
        """The show segment playing now (None before run())."""
        if self._start_ms is None:
            return None
        return self.sim.phase_at((self._clock.now_ms() - self._start_ms) / 1000)

    @property
    def start_ms(self) -> int | None:
        return self._start_ms

    async def run(self, emit: Emit) -> None:
        """Emit events until stop(); ts is simulated time aligned to the clock, received_ts the emit time."""
        if self._started:
            raise RuntimeError("This SimulatorSource has already run; build a new one to run again")
        self._started = True
        status = self.status
        if self._stop_requested:
            status.state = SourceState.STOPPED
            return
        start = self._start_ms = self._clock.now_ms()
        stream = self.sim.stream(start_ts=start, hasher=self._hasher)
        status.state = SourceState.CONNECTED
        pending, _ = next(stream)
        while not self._stop_requested:
            now = self._clock.now_ms()
            while pending.ts <= now and not self._stop_requested:
                await emit(replace(pending, received_ts=now))
                status.messages += 1
                status.last_message_ms = now
                pending, _ = next(stream)
            if not self._stop_requested:
                await self._sleep(TICK_MS / 1000)
        status.state = SourceState.STOPPED

    async def _sleep(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        self._sleeper = sleeper
        try:
            await asyncio.wait({sleeper})  # returns, without raising here, when stop() cancels the sleeper
        finally:
            sleeper.cancel()
            self._sleeper = None

    def stop(self) -> None:
        """Stop at the next event or tick."""
        self._stop_requested = True
        if self._sleeper is not None:
            self._sleeper.cancel()
