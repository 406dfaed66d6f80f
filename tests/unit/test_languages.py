"""The city's languages come from config/languages.yaml and the public words from message
catalogs: fallback orders, catalogs chained along them, playbook notes, and no code that
names a language."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from coordinator.city import load_city
from coordinator.errors import ConfigError
from coordinator.languages import load_languages
from coordinator.playbooks.loader import check_playbook_file, language_notes
from coordinator.translations import load_catalogs
from coordinator.yamlsource import YamlSource
from tests.conftest import FIXTURE_MAP

ROOT = Path(__file__).parents[2]
CITY = load_city(ROOT / "config", FIXTURE_MAP)
KEYWORDS = {"_": None, "N_": None, "gettext": (2,)}


def languages_from(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "languages.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_demo_city_speaks_four_languages_each_with_its_fallbacks() -> None:
    languages = CITY.languages
    assert languages.tags == ["vi", "en", "fr", "th"]
    assert languages.names() == {"vi": "Tiếng Việt", "en": "English", "fr": "Français",
                                 "th": "ไทย"}
    assert languages.order("fr") == ("fr", "en", "vi")
    assert languages.order("vi") == ("vi", "en")
    assert languages.order("es") == ("vi", "en")  # undeclared: the city's own order
    assert languages.best("th", ["vi", "en"]) == "en"
    assert languages.best("fr", ["vi"]) == "vi" and languages.best("fr", []) is None
    assert languages.pick("fr") == "fr" and languages.pick("xx") == "vi"
    assert languages.pick(None) == "vi"
    assert (languages.cap_tag("vi"), languages.cap_tag("fr")) == ("vi-VN", "fr")
    # folded as SMS words are compared: no case, accents or Thai marks
    assert languages.join_words == {"DANG KY": "vi", "THAM GIA": "vi", "JOIN": "vi",
                                      "SUBSCRIBE": "en", "INSCRIRE": "fr", "สมคร": "th"}
    assert languages.find("FR") == "fr" and languages.pick("Th") == "th"


def test_names_fill_in_along_the_fallback_order() -> None:
    """A French name where the file has one; Thai readers get English where it has none."""
    kim_ma = CITY.areas["hn-ba-dinh-kim-ma"]
    assert kim_ma.name_in("fr") == "Kim Mã" and kim_ma.name_in("th") == "Kim Ma Ward"
    assert CITY.areas["hn"].name_in("th") == "กรุงฮานอย"
    assert CITY.kinds["flood"].name["fr"] == "Inondation"


@pytest.mark.parametrize(("text", "problem"), [
    ("version: 1\ndefault: vi\nmessages: vi\nstaff: [vi]\nlanguages:\n  - {tag: vi, name: V}\n"
     "  - {tag: vi, name: W}\n", "language 'vi' appears twice"),
    ("version: 1\ndefault: vi\nmessages: vi\nstaff: [vi]\nlanguages:\n  - {tag: vi, name: V, "
     "fallback: [en]}\n", "languages.vi.fallback: 'en' is not a declared language"),
    ("version: 1\ndefault: fr\nmessages: vi\nstaff: [vi]\nlanguages:\n  - {tag: vi, name: V}\n",
     "default: 'fr' is not a declared language"),
    ("version: 1\ndefault: vi\nmessages: vi\nstaff: [vi]\nlanguages:\n  - {tag: vi, name: V}\n"
     "  - {tag: Vietnamese, name: W}\n",
     "languages.yaml:7: languages[1].tag: 'Vietnamese' is not a BCP 47 language tag"),
])
def test_a_broken_languages_file_is_refused_naming_the_field(tmp_path: Path, text: str,
                                                             problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_languages(YamlSource.read(languages_from(tmp_path, text)))
    assert problem in str(caught.value)


def test_a_bcp47_tag_with_a_script_is_a_language(tmp_path: Path) -> None:
    path = languages_from(tmp_path, "version: 1\ndefault: vi\nmessages: vi\nstaff: [vi]\n"
                                    "languages:\n  - {tag: vi, name: Tiếng Việt}\n"
                                    "  - {tag: zh-Hant, name: 繁體中文, fallback: [vi]}\n")
    assert load_languages(YamlSource.read(path)).order("zh-Hant") == ("zh-Hant", "vi")


def test_a_missing_translation_falls_back_along_the_order(tmp_path: Path) -> None:
    """zh-Hant's catalog has one word; the rest comes from its fallback's (Vietnamese); a
    language without a catalog of its own reads its fallback's; the chain ends with the
    ids at their own language (English)."""
    config = tmp_path / "config"
    config.mkdir()
    languages = load_languages(YamlSource.read(languages_from(
        config, "version: 1\ndefault: vi\nmessages: en\nstaff: [vi]\nlanguages:\n"
                "  - {tag: vi, name: V, fallback: [en]}\n  - {tag: en, name: E}\n"
                "  - {tag: zh-Hant, name: Z, fallback: [vi]}\n"
                "  - {tag: ko, name: K, fallback: [vi]}\n")))
    catalogs_dir = config / "locale"
    (catalogs_dir / "vi" / "LC_MESSAGES").mkdir(parents=True)
    (catalogs_dir / "zh-Hant" / "LC_MESSAGES").mkdir(parents=True)
    (catalogs_dir / "vi" / "LC_MESSAGES" / "loa.po").write_text(
        'msgid "Press"\nmsgstr "Báo chí"\n\nmsgid "Subscribe"\nmsgstr "Đăng ký nhận tin"\n',
        encoding="utf-8")
    (catalogs_dir / "zh-Hant" / "LC_MESSAGES" / "loa.po").write_text(
        'msgid "Press"\nmsgstr "新聞"\n', encoding="utf-8")
    catalogs = load_catalogs(catalogs_dir, languages)
    assert catalogs.gettext("zh-Hant", "Press") == "新聞"
    assert catalogs.gettext("zh-Hant", "Subscribe") == "Đăng ký nhận tin"
    assert catalogs.gettext("en", "Subscribe") == "Subscribe"
    assert catalogs.gettext("vi", "Filter") == "Filter"  # in no catalog: the English id
    assert catalogs.gettext("ko", "Press") == "Báo chí"  # no catalog yet: its fallback's
    assert catalogs.missing == ("ko",)  # `loa doctor` names it (English is the ids)
    (catalogs_dir / "vi" / "LC_MESSAGES" / "loa.po").write_text('msgid "x"\nbogus\n')
    with pytest.raises(ConfigError, match=r"vi/LC_MESSAGES/loa\.po"):
        load_catalogs(catalogs_dir, languages)


def test_every_public_word_is_in_the_template_and_translated_in_every_catalog() -> None:
    """config/locale/loa.pot holds exactly what the code and templates ask for (`make
    catalogs` extracts it), and each demo catalog translates all of it."""
    method_map = [("coordinator/**.py", "python"),
                  ("coordinator/web/templates/**.html", "jinja2")]
    found = {message if isinstance(message, str) else next(m for m in message if m)
             for _, _, message, _, _ in extract_from_dir(str(ROOT), method_map,
                                                          keywords=KEYWORDS)}
    with (ROOT / "config" / "locale" / "loa.pot").open("rb") as fp:
        template = {m.id for m in read_po(fp) if m.id}
    assert found == template, "run `make catalogs`"
    for tag in CITY.languages.tags:
        path = ROOT / "config" / "locale" / tag / "LC_MESSAGES" / "loa.po"
        if not path.exists():
            continue
        with path.open("rb") as fp:
            catalog = read_po(fp)
        untranslated = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)]
        assert untranslated == [], tag
        assert {m.id for m in catalog if m.id} == template, tag
        for message in catalog:
            if message.id:
                fields = set(re.findall(r"\{\w+\}", str(message.id)))
                assert set(re.findall(r"\{\w+\}", str(message.string))) == fields, message.id


def test_a_playbook_without_a_declared_language_is_noted_not_refused() -> None:
    playbook, problems = check_playbook_file(ROOT / "playbooks" / "misinformation.yaml", CITY)
    assert problems == [] and playbook is not None
    assert language_notes(playbook, CITY) == [
        "misinformation: no fr (Français) templates: its readers get en",
        "misinformation: no th (ไทย) templates: its readers get en"]
    flood, _ = check_playbook_file(ROOT / "playbooks" / "flood.yaml", CITY)
    assert flood is not None and language_notes(flood, CITY) == []
    spanish = flood.model_copy(update={"languages": [*flood.languages, "es"]})
    assert language_notes(spanish, CITY) == [
        "flood: es is not a language of config/languages.yaml: nobody reads it"]


def _named_languages(path: Path, tags: set[str]) -> list[str]:
    """Every string literal in a module that is exactly a language tag, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and node.value in tags]


def test_no_code_names_or_restricts_a_language() -> None:
    """Outside config/, playbooks/, the catalogs and tests, nothing says "vi" or "fr": no
    Literal of languages, no default language, no `lang == "vi"` in a public page (the
    staff console's bilingual labels are text, not a choice of language)."""
    tags = {"vi", "en", "fr", "th", "vi-VN", "en-US"}
    found = [hit for folder in ("coordinator", "channels")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for hit in _named_languages(path, tags)]
    assert found == []
    templates = ROOT / "coordinator" / "web" / "templates"
    comparisons = [f"{p.name}: {line.strip()}" for p in sorted(templates.glob("*.html"))
                   for line in p.read_text(encoding="utf-8").splitlines()
                   if re.search(r"""lang\s*==\s*["']|value="(vi|en)"|\?lang=(vi|en)\b""",
                                line)]
    assert comparisons == []


def test_every_declared_language_has_its_pages_words() -> None:
    """The demo's catalogs cover the demo's languages (English is the ids)."""
    assert {tag: CITY.catalogs.gettext(tag, "Subscribe") for tag in CITY.languages.tags} == {
        "vi": "Đăng ký", "en": "Subscribe", "fr": "S'inscrire",
        "th": "สมัครรับข่าวสาร"}
    assert CITY.catalogs.missing == ()


@pytest.mark.parametrize(("words", "problem"), [
    ('{tag: vi, name: V, join: ["ĐĂNG KÝ"]}\n  - {tag: en, name: E, join: ["dang ky"]}',
     "languages.en.join: 'dang ky' subscribes in vi"),
    ("{tag: vi, name: V, join: [Stop]}", "languages.vi.join: 'Stop' is an SMS keyword already"),
    ('{tag: vi, name: V, join: [""]}', "languages[0].join[0]"),
])
def test_sign_up_words_are_compared_as_sms_words_are(tmp_path: Path, words: str,
                                                     problem: str) -> None:
    """Without case or accents, as `parse_sms` reads them; never a carrier keyword."""
    path = languages_from(tmp_path, "version: 1\ndefault: vi\nmessages: en\nstaff: [vi]\n"
                                    f"languages:\n  - {words}\n")
    with pytest.raises(ConfigError) as caught:
        load_languages(YamlSource.read(path))
    assert problem in str(caught.value)


def test_a_readers_links_open_their_own_language() -> None:
    """The SMS link of a French text opens the French page; the city's language needs no
    `?lang=`; an email's link is its text's language's page."""
    from coordinator.dispatch.fanout import deliveries_for
    from coordinator.events import RenderedText, Severity, Statement, utcnow
    from coordinator.playbooks.loader import load_playbooks
    from coordinator.playbooks.render import IncidentFacts, render_draft
    from coordinator.subscribers.models import Subscriber

    facts = IncidentFacts(id="INC-00007", kind="flood", severity=Severity.severe,
                          title="Ngập", details="", area="hn-ba-dinh-kim-ma",
                          link="https://loa.example/s/STM-00007-1")
    flood = load_playbooks(ROOT / "playbooks", CITY)["flood"]
    sms = {t.language: t.body for t in render_draft(flood, facts, CITY, utcnow(), "UTC")
           if t.channel == "sms"}
    assert sms["vi"].endswith("https://loa.example/s/STM-00007-1")
    assert sms["fr"].endswith("https://loa.example/s/STM-00007-1?lang=fr")
    statement = Statement(id="STM-00007-1", incident_id="INC-00007", approval_id="APR-00007-1",
                          draft_id="DRF-00007-1", playbook_id="flood", kind="flood",
                          severity=Severity.severe, area="hn",
                          texts=[RenderedText(channel="email", language="en", title="t",
                                              body="b")], approved_by=["x"],
                          approved_at=utcnow())
    reader = Subscriber(id="sub-1", email="a@b.example", language="th", areas=["hn"],
                        channels=["email"])
    [email] = deliveries_for(statement, reader, "https://loa.example/statements/STM-00007-1",
                             CITY.languages)
    assert email.text.endswith("/statements/STM-00007-1?lang=en")


def test_thai_sms_is_counted_as_ucs2_and_french_accents_as_what_they_are() -> None:
    """Thai, like Vietnamese, is UCS-2: 70 characters in one segment, 67 a part after; é is
    in GSM-7, ê is not. The demo's French and Thai SMS fit their budgets in the worst case
    (`loa playbooks validate` renders each language with its longest area name)."""
    from channels.segments import segment_count

    assert [segment_count("ก" * n) for n in (70, 71, 134, 135)] == [1, 2, 2, 3]
    assert segment_count("é" * 160) == 1 and segment_count("ê" * 71) == 2
    for name in ("flood", "fire"):
        playbook, problems = check_playbook_file(ROOT / "playbooks" / f"{name}.yaml", CITY)
        assert problems == [] and playbook is not None
        assert {"fr", "th"} <= set(playbook.languages)


def test_a_csv_language_is_any_declared_tag_in_any_case_else_named() -> None:
    from coordinator.subscribers.csvio import parse_csv

    rows = list(parse_csv("phone,language,areas,channels\n0911222333,FR,hn,sms\n"
                          "0911222334,,hn,sms\n0911222335,xx,hn,sms\n", CITY))
    assert [(line, sub.language if sub else None, why) for line, sub, why in rows] == [
        (2, "fr", ""), (3, "vi", ""),
        (4, None, "language: 'xx' is not one of the city's languages (vi, en, fr, th)")]
