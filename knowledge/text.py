"""Chinese text for search: normalisation, jieba tokens with a service vocabulary, question aspects."""
from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable

import jieba

from textnorm.numerals import normalize_numbers

jieba.setLogLevel(logging.WARNING)

# Sections every guide has, in this order. Questions name one of them by the words below.
SECTIONS: tuple[str, ...] = ("办理条件", "所需材料", "办理流程", "办理地点", "办理时限", "收费标准", "咨询方式")

# Aspect words: which section a question asks for. Checked in this order; 办理流程 is the default
# reading of "怎么办" and only wins when nothing more specific is asked.
ASPECT_WORDS: dict[str, tuple[str, ...]] = {
    "收费标准": ("多少钱", "收费", "费用", "要钱", "花钱", "免费", "交多少", "几块", "工本费", "价格", "多钱", "收钱"),
    "所需材料": ("材料", "带什么", "带啥", "带哪些", "拿什么", "拿啥", "资料", "证件", "要啥手续", "啥手续", "什么手续",
                 "准备什么", "准备啥", "要什么", "要啥"),
    "办理地点": ("在哪", "哪里", "哪儿", "哪个地方", "什么地方", "地址", "地点", "去哪", "窗口", "哪个部门"),
    "办理时限": ("多久", "多长时间", "几天", "多少天", "时限", "什么时候", "啥时候", "几个月", "多快", "当天", "多少年"),
    "咨询方式": ("电话", "咨询", "热线", "号码", "联系", "打什么"),
    "办理条件": ("条件", "能不能", "能否", "可以吗", "能吗", "符合", "资格", "多大", "年龄", "谁能", "哪些人", "要求"),
    "办理流程": ("流程", "怎么办", "咋办", "怎么弄", "咋弄", "步骤", "程序", "怎么申请", "咋申请", "如何", "网上", "手机上"),
}

# Words that carry no topic: question forms, dialect fillers, politeness. Kept out of queries and
# out of the coverage measure, so "俺想问问啥时候" is not half a match for everything.
STOPWORDS = frozenset("""
的 了 吗 呢 吧 啊 呀 哦 嘛 么 是 在 有 和 与 及 或 我 你 他 她 它 我们 你们 他们 俺 咱 咱们 自己 这 那 这个 那个 哪 哪个
什么 啥 怎么 咋 怎样 怎么样 如何 为什么 要 想 想要 需要 得 能 会 可以 应该 请问 问问 问 一下 一个 个 些 都 也 就 还 又
再 才 把 被 给 让 对 从 到 去 来 上 下 中 里 后 前 时 时候 现在 今年 已经 没 没有 不 不是 吗 么 请 您 好 谢谢 麻烦 帮 帮我
办 办理 弄 搞 多少 多 几 家 家里 人 咱家 俺家 这儿 那儿 吧 嘞 哩 咧 喽 啦 呐 及其 以及 等 之 其 该 按 按照 由 向 于 为
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


def aspect_of(question: str) -> str | None:
    """The section a question asks for ("要带什么" -> 所需材料), or None when it names none."""
    text = normalize(question)
    for section, words in ASPECT_WORDS.items():
        if any(word in text for word in words):
            return section
    return None


def strip_aspect(question: str) -> str:
    """The question without its aspect words: what is left names the topic, if anything."""
    text = normalize(question)
    for words in ASPECT_WORDS.values():
        for word in sorted(words, key=len, reverse=True):
            text = text.replace(word, " ")
    return text
