"""Chinese text for search: normalisation, jieba tokens with a service vocabulary, question aspects."""
from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable

import jieba
from pypinyin import lazy_pinyin

from textnorm.numerals import normalize_numbers

jieba.setLogLevel(logging.WARNING)

# Sections every guide has, in this order. Questions name one of them by the words below.
SECTIONS: tuple[str, ...] = ("办理条件", "所需材料", "办理流程", "办理地点", "办理时限", "收费标准", "咨询方式")

OVERVIEW = "概述"  # not a section of the file: the guide in short, said when a question names no aspect

# Aspect cues: what a question asks about, as (pattern, weight) per section. A table scanned in
# order (the first version) let the first section of the table win whenever a question held two
# cue words, and missed the way people here ask: "能领不", "够不够", "上哪", "找谁问", "头一步干啥".
# So every cue that matches scores, and the section with the highest score wins:
#   weight 3: the section named or nearly ("条件", "材料", "流程", "电话", "多少钱", "几天");
#   weight 2: a usual question form ("带啥", "咋办", "在哪", "问谁", "当天");
#   weight 1: a weak sign ("能…不" at the end asks whether one may, "要啥" may ask for anything).
# A cue that ends later in the question scores up to half a point more: Chinese puts the thing
# asked at the end ("户口从外县迁过来咋弄"). Ties go to the earlier section in the table. A small
# learnt classifier was not used: 125 tuning questions are too few to learn from without learning
# them, and a table says why it chose. Tuned on knowledge/eval/sections-dev.tsv only.
HOURS = "hours"  # office hours: the guide's section that holds its 办公时间 (see hours_section)
ASPECT_CUES: dict[str, tuple[tuple[str, int], ...]] = {
    "收费标准": (
        (r"多少钱|几块钱?|几毛|多钱|收费|费用|工本费|手续费|价格|[电水气]价|贵不贵|便宜", 3),
        (r"(要|收|花|掏|交|缴|给)(钱|费)|钱不|免费|不要钱|要不要钱|收不收", 3),
        (r"(交|缴|花)多少|一度|一吨|一方|一本|每本|每证", 2),
    ),
    "所需材料": (
        (r"材料|资料|证件|证明|手续(?!费)|单子|照片", 3),
        (r"(要|得|需要|该|用|都)带|带(啥|什么|哪些|上|着|点)|拿(啥|什么|哪些)(东西|证)?|准备(啥|什么|哪些|点)", 3),
        (r"(要|需要|得)(啥|什么)(东西)?", 1),
    ),
    "办理流程": (
        (r"流程|步骤|程序|手续怎么|怎么操作|咋操作|头一步|第一步|先干啥|先干什么|下一步", 3),
        (r"(怎么|咋|怎样|如何|咋个)(个)?(办|弄|整|搞|申请|补|换|交|缴|提|取|充|挂失|处理|报|上|迁|认证|开|注册|领|登记|预约|备案|查|走|做)", 2),
        (r"网上|手机上|线上", 2),
        (r"先.{1,6}还是", 2),
        (r"以后|之后|然后", 1),
    ),
    "办理地点": (
        (r"地址|地点|窗口|营业厅|大厅在|现场", 3),
        (r"在哪|哪里|哪儿|上哪|去哪|到哪|哪个地方|什么地方|啥地方|哪个派出所|多远", 2),
        (r"哪个部门|哪个单位", 1),
    ),
    HOURS: (
        (r"几点|[上下]班(时间|不|吗|么|没)|上不上班|开门|关门|周末|周六|周日|星期|礼拜|节假日|放假|办公时间|营业时间|晚上|中午|夜里", 3),
    ),
    "办理时限": (
        (r"多久|多长时间|多少天|几天|几个月|几个工作日|时限|期限|多快|加急|到账|周期", 3),
        (r"什么时候|啥时候|啥时间|什么时间|几时|当天|当场|马上|立马|哪天|几号|要等|得等|等多|能下来|批下来|拿到手", 2),
    ),
    "咨询方式": (
        (r"电话|热线|号码|咨询|联系方式|联系谁", 3),
        (r"问谁|找谁|问哪|找哪个|打啥|打什么|打哪个|归谁管|谁管|哪个部门管|有不懂", 2),
    ),
    "办理条件": (
        (r"条件|资格|符合|够格|要求|年龄|年满|多大", 3),
        (r"够不够|中不中|行不行|让不让|能不能|能否|可不可以|有没有资格|谁能|啥人|什么人|哪些人|啥样的|什么样的|哪些情况|啥情况|什么情况|哪些事|啥事都", 2),
        (r"要不要(?!钱)|用不用|需不需要|必须|非得|[要得]办.{0,6}不$", 2),
        (r"能.{1,12}(不|吗|么|没)$|可以.{0,12}(不|吗|么)$|会.{1,10}不$|\d+岁|\d+了", 1),
    ),
}
_CUES = [(section, re.compile(pattern), weight) for section, cues in ASPECT_CUES.items() for pattern, weight in cues]
_ORDER = {section: n for n, section in enumerate(ASPECT_CUES)}
# Cues without wildcards are cut out of a question to find its topic words; "能…不" is not, or
# "能办身份证不" would lose 身份证.
_STRIPPED = [pattern for _, pattern, _ in _CUES if "." not in pattern.pattern and "\\d" not in pattern.pattern]
# What the guides say about their hours: the section holding this is where "几点上班" is answered.
HOURS_TEXT = re.compile(r"(办公|营业|接种)时间|小时有人接听")

# Words that carry no topic: question forms, dialect fillers, politeness. Kept out of queries and
# out of the coverage measure, so "俺想问问啥时候" is not half a match for everything.
STOPWORDS = frozenset("""
的 了 吗 呢 吧 啊 呀 哦 嘛 么 是 在 有 和 与 及 或 我 你 他 她 它 我们 你们 他们 俺 咱 咱们 自己 这 那 这个 那个 哪 哪个
什么 啥 怎么 咋 怎样 怎么样 如何 为什么 要 想 想要 需要 得 能 会 可以 应该 请问 问问 问 一下 一个 个 些 都 也 就 还 又
再 才 把 被 给 让 对 从 到 去 来 上 下 中 里 后 前 时 时候 现在 今年 已经 没 没有 不 不是 吗 么 请 您 好 谢谢 麻烦 帮 帮我
办 办理 弄 搞 多少 多 几 家 家里 人 咱家 俺家 这儿 那儿 吧 嘞 哩 咧 喽 啦 呐 及其 以及 等 之 其 该 按 按照 由 向 于 为
俺娘 俺爹 俺妈 俺爸 俺闺女 俺儿子 俺孩子 老伴 老家 城里 厂里 恁 中不中
事 事情 事儿 找 谁 换 交 领 做 用 打 查 提 取 买 发 丢 算 着 急 刚 理 下来 有用 一年 能领 能取 要交 交满 开个 换个
""".split())

_STOP_CHARS = frozenset(w for w in STOPWORDS if len(w) == 1)

_PUNCT = re.compile(r"[\s\u3000-\u303f\uff00-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65!-/:-@\[-`{-~]+")

# General service words jieba does not split well.
_VOCABULARY = (
    "身份证", "临时身份证", "户口本", "户口簿", "户口迁移", "落户", "上户口", "出生医学证明", "居住证", "结婚证", "结婚登记",
    "社保卡", "社会保障卡", "医保", "居民医保", "新农合", "异地就医", "备案", "养老保险", "养老金", "资格认证", "高龄津贴",
    "高龄补贴", "公积金", "住房公积金", "营业执照", "个体户", "个体工商户", "不动产", "房产证", "房本", "过户", "驾驶证",
    "驾照", "换证", "违章", "违法", "罚款", "记分", "水费", "电费", "燃气费", "天然气", "燃气", "残疾证", "残疾人证", "低保",
    "最低生活保障", "12345", "政务服务中心", "政务大厅", "承包地", "土地流转", "耕地地力保护补贴", "农机购置补贴",
    "失业登记", "失业金", "失业保险金", "助学贷款", "助学金", "疫苗", "预防接种证", "接种证", "护照", "出入境",
    "交管12123", "一卡通", "刷脸", "工本费", "阶梯电价", "阶梯水价", "滞纳金", "违约金",
)


def normalize(text: str) -> str:
    """Full-width to half-width, lower case, spoken digits to digits ("幺二三四五" -> "12345")."""
    return normalize_numbers(unicodedata.normalize("NFKC", text).lower())


class Tokenizer:
    """jieba in search mode (long words and their sub-words) with the service vocabulary added.

    Each instance has its own jieba dictionary, so titles and aliases of one index never leak into
    another process's tokenizer."""

    def __init__(self, extra_words: Iterable[str] = ()) -> None:
        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()
        for word in (*_VOCABULARY, *extra_words):
            word = normalize(word).strip()
            if word and not _PUNCT.search(word):
                self._jieba.add_word(word, freq=20000)

    def tokens(self, text: str) -> list[str]:
        """Search tokens of ``text`` without stopwords and punctuation."""
        out: list[str] = []
        for piece in _PUNCT.split(normalize(text)):
            if not piece:
                continue
            for token in self._jieba.cut_for_search(piece):
                token = token.strip()
                # "那要", "还得": words made only of stopword characters are stopwords too.
                if token and token not in STOPWORDS and not all(c in _STOP_CHARS for c in token):
                    out.append(token)
        return out

    def pinyin_tokens(self, text: str) -> list[str]:
        """Pairs of neighbouring toneless syllables of the question's words ("医保" -> "yi_bao").

        A phone recogniser writes a word it mishears as a homophone (宜宝 for 医保, 残疾症 for
        残疾证), which jieba then cuts differently; pairs of syllables over the words in order
        (stopwords left out, as in ``tokens``) match however the homophone was cut."""
        out: list[str] = []
        for piece in _PUNCT.split(normalize(text)):
            stream: list[str] = []
            for token in self._jieba.cut(piece):
                token = token.strip()
                if token and token not in STOPWORDS and not all(c in _STOP_CHARS for c in token):
                    stream.extend(syllables(token))
            out.extend(f"{a}_{b}" for a, b in zip(stream, stream[1:]))
        return out


def syllables(word: str) -> list[str]:
    """Toneless pinyin of a word ("医保" -> ["yi", "bao"]); digits and Latin letters stay as they are."""
    return [s.strip() for s in lazy_pinyin(word) if s.strip()]


def aspect_scores(question: str) -> dict[str, float]:
    """Each aspect the question's cues point to, with its score (see ASPECT_CUES)."""
    text = _PUNCT.sub(" ", normalize(question)).strip()
    scores: dict[str, float] = {}
    for section, pattern, weight in _CUES:
        for m in pattern.finditer(text):
            score = weight + 0.5 * m.end() / max(len(text), 1)
            scores[section] = max(scores.get(section, 0.0), score)
    return scores


def asked_aspect(question: str) -> str | None:
    """The aspect a question asks for: a section name, HOURS, or None when it names none."""
    scores = aspect_scores(question)
    if not scores:
        return None
    return max(scores, key=lambda s: (scores[s], -_ORDER[s]))


def aspect_of(question: str) -> str | None:
    """The section a question asks for ("要带什么" -> 所需材料), or None when it names none.
    Office hours read 办理地点 here, where most guides keep them; hours_section finds a guide's own."""
    aspect = asked_aspect(question)
    return "办理地点" if aspect == HOURS else aspect


def hours_section(sections: dict[str, str]) -> str:
    """The section of a guide that tells its office hours (办理地点 when none says)."""
    return next((name for name in SECTIONS if HOURS_TEXT.search(sections.get(name, ""))), "办理地点")


def strip_aspect(question: str) -> str:
    """The question without its aspect cues: what is left names the topic, if anything."""
    text = normalize(question)
    for pattern in _STRIPPED:
        text = pattern.sub(" ", text)
    return text
