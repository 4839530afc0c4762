"""Resampling, transcripts, the model's sample rate, recordings retention, what is spoken."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voice.asr import model_sample_rate
from voice.audio import StreamResampler, read_wav, resample, trim_silence, write_wav
from voice.recordings import Recorder
from voice.wording import sentences, speakable


def tone(rate: int, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


@pytest.mark.parametrize("src, dst", [(8000, 16000), (16000, 8000), (8000, 8000)])
def test_streaming_resampler_matches_one_shot(src: int, dst: int) -> None:
    x = tone(src)
    r = StreamResampler(src, dst)
    streamed = b"".join(r.feed(x[i:i + 320]) for i in range(0, len(x), 320)) + r.flush()
    whole = resample(x, src, dst)
    assert len(streamed) == len(whole) == len(x) * dst // src
    a, b = np.frombuffer(streamed, "<i2").astype(int), np.frombuffer(whole, "<i2").astype(int)
    assert np.abs(a[100:-100] - b[100:-100]).max() <= 1  # no clicks at the 20 ms chunk edges


def test_wav_round_trip_and_refusal() -> None:
    pcm = tone(8000, 0.1)
    assert read_wav(write_wav(pcm, 8000)) == (pcm, 8000)
    with pytest.raises(ValueError):
        read_wav(b"RIFF....WAVEnot really")


def test_model_sample_rate_is_read_from_its_config(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mfcc.conf").write_text("--use-energy=false\n--sample-frequency=8000\n")
    assert model_sample_rate(tmp_path) == 8000
    (tmp_path / "conf" / "mfcc.conf").write_text("--use-energy=false\n")
    assert model_sample_rate(tmp_path) == 16000  # Kaldi's default


def test_recordings_older_than_retention_are_deleted(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, retention_days=30)
    old, new = rec("old-call", 8000), rec("new-call", 8000)
    old.write(bytes(320))
    new.write(bytes(320))
    old_path, new_path = Path(old.close()), Path(new.close())
    past = time.time() - 31 * 86400
    os.utime(old_path, (past, past))
    assert rec.purge() == 1
    assert not old_path.exists() and new_path.exists()


def test_links_and_markup_are_not_read_aloud() -> None:
    assert speakable("**身份证**办理\n详见 https://example.cn/guide/x") == "身份证办理。详见"
    assert sentences("您好。请问办什么事？好的") == ["您好。", "请问办什么事？", "好的。"]


def test_prompts_start_at_once() -> None:
    speech = tone(8000, 0.5)
    trimmed = trim_silence(bytes(8000) + speech + bytes(16000), 8000)  # 0.5 s before, 1 s after
    # 50 ms kept before the first loud sample, 250 ms after the last (the tone starts near zero)
    assert abs(len(trimmed) - (len(speech) + 0.3 * 16000)) <= 64
    assert trim_silence(bytes(800), 8000) == bytes(800)


def fixture(name: str) -> bytes:
    return read_wav((Path(__file__).parents[1] / "fixtures" / "speech" / "zh" / f"{name}.wav").read_bytes())[0]


def test_silero_finds_the_speech_and_not_the_silence_or_a_tone() -> None:
    from voice.vad import Endpointer, SileroModel

    model = SileroModel()
    speech = fixture("progress_001")
    ep = Endpointer(model.detector(8000), 8000, start_ms=160, endpoint_s=0.5)
    results = [ep.push(c) for c in (bytes(16000), tone(8000, 1.0), speech, bytes(16000))]
    assert not results[0].started and not results[1].started  # silence, then a steady 440 Hz tone
    assert results[2].started and not results[2].ended
    assert results[3].ended
    heard = b"".join(results[2].audio + results[3].audio)
    # the utterance keeps its first syllable (pre-roll) and about the endpoint delay after the speech
    assert len(speech) <= len(heard) <= len(speech) + 2 * 8000 * 2 * 0.9


def _utterances(ep: Any, pcm: bytes) -> int:
    """How many utterances the endpointer cuts from ``pcm`` fed as 20 ms frames, then 1 s of quiet."""
    ended = 0
    for i in range(0, len(pcm), 320):
        ended += ep.push(pcm[i:i + 320]).ended
    for _ in range(50):
        ended += ep.push(bytes(320)).ended
    return ended


def test_a_caller_who_pauses_at_a_comma_is_heard_as_one_sentence() -> None:
    """"俺上礼拜反映的停水，咋还没人回话": the comma is a pause of about 0.6 s. The default endpoint
    waits it out; at 0.5 s the line used to cut the sentence there and answer its first half."""
    from voice.vad import ENDPOINT_S, Endpointer, SileroModel

    model, speech = SileroModel(), fixture("ticket_008")
    assert _utterances(Endpointer(model.detector(8000), 8000), speech) == 1
    assert _utterances(Endpointer(model.detector(8000), 8000, endpoint_s=0.5), speech) == 2
    assert ENDPOINT_S <= 1.0  # and not so long that a caller waits for an answer


def test_an_utterance_also_ends_when_the_frames_stop() -> None:
    from voice.vad import Endpointer, SileroModel

    ep = Endpointer(SileroModel().detector(8000), 8000)
    assert ep.push(fixture("human_001")).started and ep.in_speech
    assert ep.frames_stopped().ended and not ep.in_speech


def test_gateways_sharing_a_prompt_cache_write_the_same_prompt_at_once(tmp_path: Path) -> None:
    """Two voice gateways on one host share the TTS cache directory and render the same prompts at
    start-up: neither may fail (one once crashed renaming a temporary file the other had renamed)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from voice.tts import Speaker

    pcm = os.urandom(16000)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as procs:
        done = [procs.submit(_write_many, str(tmp_path), pcm) for _ in range(2)]
        assert [f.result() for f in done] == [40, 40]
    speaker = Speaker("cmn-latn-pinyin", tmp_path)
    with ThreadPoolExecutor(8) as threads:
        list(threads.map(lambda _: speaker._write_disk("same-prompt", pcm), range(40)))
    assert (tmp_path / "same-prompt.pcm").read_bytes() == pcm
    assert not list(tmp_path.glob("*.tmp"))


def _write_many(cache: str, pcm: bytes) -> int:
    from voice.tts import Speaker

    speaker = Speaker("cmn-latn-pinyin", Path(cache))
    for _ in range(40):
        speaker._write_disk("same-prompt", pcm)
    return 40
