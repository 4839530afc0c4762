"""Both recognisers behind the one interface, on the Mandarin fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.settings import ROOT
from tests.voice.speech import utterance
from voice.asr import DIGIT_PHRASES, VoskRecogniser, WhisperRecogniser, clean_transcript, without_prompt_echo
from voice.models import packaged_whisper
from voice.settings import PACKAGED_WHISPER_MODEL, VoiceSettings


@pytest.fixture(scope="module")
def whisper() -> WhisperRecogniser:
    return WhisperRecogniser(packaged_whisper(ROOT / PACKAGED_WHISPER_MODEL), workers=1)


async def test_whisper_understands_a_mandarin_caller(whisper: WhisperRecogniser) -> None:
    stream = whisper.stream(8000)
    await stream.feed(utterance("human_002"))  # 转人工吧，俺跟机器说不明白
    final = await stream.finish()
    assert final is not None and "转人工" in final.text and 0 < (final.confidence or 0) <= 1
    assert await stream.finish() is None  # each utterance once; nothing is left over
    whole = await whisper.transcribe(utterance("human_003", 16000), 16000)  # POST /asr's path
    assert "工作人员" in whole.text


async def test_whisper_hears_nothing_in_silence(whisper: WhisperRecogniser) -> None:
    stream = whisper.stream(8000)
    await stream.feed(bytes(16000 * 2))
    assert await stream.finish() is None


async def test_vosk_streams_and_limits_itself_to_a_phrase_list() -> None:
    settings = VoiceSettings(_env_file=None, heze_env="test")  # type: ignore[call-arg]
    rec = VoskRecogniser(settings.model_dir(), 1)  # the Korean test model: the pipeline, not the language
    try:
        stream = rec.stream(8000)
        pcm = utterance("progress_009")
        for i in range(0, len(pcm), 1600):
            await stream.feed(pcm[i:i + 1600])
        final = await stream.finish()
        assert final is not None and final.text and final.confidence is not None
        stream.limit_to(DIGIT_PHRASES)  # none of these is a Korean word: the stream stays free
        assert stream._wanted is None
    finally:
        rec.close()


def test_transcripts_become_chinese_text_with_digits() -> None:
    assert clean_transcript("幺 三 八 零 零 零 零 幺 二 三 四") == "13800001234"
    assert clean_transcript("[unk] 转 人工 [unk]") == "转人工"


def test_the_prompt_written_back_is_not_taken_for_the_caller() -> None:
    """Whisper wrote "办件进度，转人工" for "慢点说，俺耳朵背": the caller is asked again, not handed over.
    What a caller says with the prompt's words stays theirs."""
    assert without_prompt_echo("办件进度，转人工") == ""  # the prompt's phrases in the prompt's order
    assert without_prompt_echo("身份证丢门，医保，医保，医保") == "身份证丢门，医保"  # a loop, kept once
    assert without_prompt_echo("转人工") == "转人工"
    assert without_prompt_echo("转人工，转人工") == "转人工"
    assert without_prompt_echo("转人工。转人工！") == "转人工"
    assert without_prompt_echo("投诉，转人工") == "投诉，转人工"  # not the prompt's order
    assert without_prompt_echo("我要查办件进度，转人工") == "我要查办件进度，转人工"
    assert without_prompt_echo("不对，是20261101000002") == "不对，是20261101000002"


def test_the_packaged_whisper_is_assembled_once(tmp_path: Path) -> None:
    target = packaged_whisper(tmp_path / "w")
    size = (target / "model.bin").stat().st_size
    assert size > 100_000_000 and (target / "tokenizer.json").is_file()
    mtime = (target / "model.bin").stat().st_mtime
    assert packaged_whisper(target) == target and (target / "model.bin").stat().st_mtime == mtime
