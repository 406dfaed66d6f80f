"""Small pure rules: durations, SMS segments, correlation, rendering."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from channels.segments import _GSM7_BASIC, _GSM7_EXTENSION, is_gsm7, segment_count
from coordinator.city import City
from coordinator.errors import TemplateRenderError
from coordinator.events import Report, Severity
from coordinator.incidents.correlation import joins
from coordinator.playbooks.models import Duration, Playbook, WebTemplate
from coordinator.playbooks.render import IncidentFacts, render_draft

T0 = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
durations: TypeAdapter[float] = TypeAdapter(Duration)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("1h0m5s", 3605), (45, 45)])
def test_durations_parse_to_seconds(text: str | int, seconds: float) -> None:
    """Playbook durations in s, m, h and combinations."""
    assert durations.validate_python(text) == seconds


@pytest.mark.parametrize("text", ["15 mins", "", "10", "m", "0s", "-5m", "1d"])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything else is not a duration."""
    with pytest.raises(ValidationError, match=r"is not a duration|longer than zero"):
        durations.validate_python(text)


def test_gsm7_segments() -> None:
    """Plain ASCII: 160 in one segment, 153 a segment beyond; extension chars count twice."""
    assert segment_count("a" * 160) == 1
    assert segment_count("a" * 161) == 2
    assert segment_count("a" * 306) == 2
    assert segment_count("a" * 307) == 3
    assert segment_count("€" * 80) == 1
    assert segment_count("€" * 81) == 2


def test_emoji_take_two_ucs2_units() -> None:
    """An emoji is outside the BMP: two UTF-16 units, so 35 fill one segment."""
    assert segment_count("🌊" * 35) == 1
    assert segment_count("🌊" * 36) == 2
    assert segment_count("Flood 🌊") == 1 and not is_gsm7("Flood 🌊")


def test_vietnamese_is_ucs2() -> None:
    """Vietnamese diacritics are outside GSM-7: 70 in one segment, 67 a segment beyond."""
    text = "Cảnh báo ngập"
    assert not is_gsm7(text)
    assert segment_count("ả" * 70) == 1
    assert segment_count("ả" * 71) == 2
    assert segment_count("ả" * 134) == 2
    assert segment_count("ả" * 135) == 3


def test_segments_as_the_tables_say_character_by_character() -> None:
    """The counts match the GSM-7 tables read one character at a time, for 2,000 texts
    mixing basic, extension, Vietnamese and non-BMP characters, and control codes."""
    def by_hand(text: str) -> int:
        if not text:
            return 1
        if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in text):
            units = sum(2 if ch in _GSM7_EXTENSION else 1 for ch in text)
            return 1 if units <= 160 else -(-units // 153)
        units = sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)
        return 1 if units <= 70 else -(-units // 67)

    pool = [*sorted(_GSM7_BASIC), *sorted(_GSM7_EXTENSION), *"ảệữđƯ`\t\x00\u00a0]^-", "🌊"]
    draw = random.Random(7)
    texts = ["".join(draw.choice(pool) for _ in range(draw.randrange(0, 400)))
             for _ in range(1000)]
    texts += ["".join(draw.choice([*sorted(_GSM7_BASIC), *sorted(_GSM7_EXTENSION)])
                      for _ in range(draw.randrange(0, 400))) for _ in range(1000)]
    assert any(is_gsm7(t) and len(t) > 160 for t in texts)  # both alphabets, long and short
    assert sum(not is_gsm7(t) for t in texts) > 900
    for text in texts:
        assert segment_count(text) == by_hand(text), text


def test_a_report_within_the_window_joins() -> None:
    """Same kind and area within the window: the report joins the open incident."""
    assert joins("awaiting_approval", T0, T0 + timedelta(minutes=59), 3600)
    assert not joins("awaiting_approval", T0, T0 + timedelta(minutes=61), 3600)
    assert not joins("closed", T0, T0 + timedelta(minutes=1), 3600)
    assert not joins(None, None, T0, 3600)


def test_a_draft_has_every_channel_in_every_language(playbooks: dict[str, Playbook],
                                                     city: City) -> None:
    """The flood playbook renders web, sms and email in each of its languages, with names
    and severity words in each language."""
    facts = IncidentFacts(id="INC-00007", kind="flood", severity=Severity.severe,
                          title="Ngập sâu phố Kim Mã", details="40 cm", area="hn-ba-dinh-kim-ma")
    texts = render_draft(playbooks["flood"], facts, city, T0, "Asia/Ho_Chi_Minh")
    assert {(t.channel, t.language) for t in texts} == {
        (c, lang) for c in ("web", "sms", "email") for lang in ("vi", "en", "fr", "th")}
    web = {t.language: t for t in texts if t.channel == "web"}
    web_vi, web_en = web["vi"], web["en"]
    assert city.areas["hn-ba-dinh-kim-ma"].name["vi"] in web_vi.title
    assert city.areas["hn-ba-dinh-kim-ma"].name["en"] in web_en.title
    # severity in each language's words (the message catalogs)
    assert "NGHIÊM TRỌNG" in web_vi.body and "SEVERE" in web_en.body
    assert "GRAVE" in web["fr"].body and "รุนแรง" in web["th"].body
    assert "14:00 22/11/2026" in web_vi.body  # issued_at in Hanoi time (UTC+7)
    sms = [t for t in texts if t.channel == "sms"]
    assert all(t.segments is not None and t.segments <= (t.segment_budget or 0) for t in sms)


def test_rendering_refuses_an_undefined_variable(playbooks: dict[str, Playbook],
                                                 city: City) -> None:
    """StrictUndefined at render time, naming the template's place."""
    broken = playbooks["fallback"].model_copy(deep=True)
    broken.templates["vi"].__dict__["web"] = WebTemplate(title="{{ nope }}", body="x")
    facts = IncidentFacts(id="INC-1", kind="x", severity=Severity.minor, title="t", details="",
                          area="hn")
    with pytest.raises(TemplateRenderError) as caught:
        render_draft(broken, facts, city, T0, "Asia/Ho_Chi_Minh")
    assert caught.value.loc == ("templates", "vi", "web", "title")


def test_templates_keep_jinjas_own_globals(playbooks: dict[str, Playbook], city: City) -> None:
    """A template may still call jinja's globals (kept as a plain dict for speed), and
    the sandbox still refuses what is unsafe, named as a template's error (its `range`
    limit raised OverflowError, which nothing caught)."""
    tried = playbooks["fallback"].model_copy(deep=True)
    tried.templates["vi"].__dict__["web"] = WebTemplate(
        title="{{ range(3) | join(',') }} {{ dict(a=1)['a'] }}", body="x")
    facts = IncidentFacts(id="INC-1", kind="x", severity=Severity.minor, title="t", details="",
                          area="hn")
    texts = render_draft(tried, facts, city, T0, "Asia/Ho_Chi_Minh")
    assert [t.title for t in texts if t.channel == "web" and t.language == "vi"] == ["0,1,2 1"]
    for unsafe in ("{{ incident.__class__.__mro__ }}",
                   "{{ range(100001) | length }}"):  # the sandbox's own `range`, still
        tried.templates["vi"].__dict__["web"] = WebTemplate(title=unsafe, body="x")
        with pytest.raises(TemplateRenderError):
            render_draft(tried, facts, city, T0, "Asia/Ho_Chi_Minh")


def test_report_validation_names_the_field(make_report: Callable[..., Report]) -> None:
    """A report with a bad kind names `kind`."""
    with pytest.raises(ValidationError) as caught:
        make_report(kind="Flood!!")
    assert [e["loc"] for e in caught.value.errors()] == [("kind",)]
