"""The languages the city speaks (config/languages.yaml): BCP 47 tags, each with its own
name, its fallback order, its text direction and its SMS sign-up words. No code names a
language; everything that chooses one asks this."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from coordinator.errors import ConfigError
from coordinator.yamlsource import YamlSource, validate_source

# BCP 47 as cities use it: a language, then optional script, region or variant subtags
# (vi, en, fr, th, zh-Hant, pt-BR, sr-Latn-RS); checked for shape, not against IANA's list.
TAG_PATTERN = r"^[a-z]{2,3}(-[A-Za-z]{4})?(-([A-Z]{2}|[0-9]{3}))?(-[A-Za-z0-9]{5,8})*$"


def _bcp47(value: str) -> str:
    if not re.fullmatch(TAG_PATTERN, value):
        raise ValueError(f"{value!r} is not a BCP 47 language tag (e.g. vi, en, fr, zh-Hant)")
    return value


Tag = Annotated[str, AfterValidator(_bcp47)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Language(_Strict):
    """One language of config/languages.yaml."""

    tag: Tag
    name: str = Field(min_length=1)  # in the language itself: "Français", "ไทย"
    fallback: list[Tag] = Field(default_factory=list)
    direction: Literal["ltr", "rtl"] = "ltr"
    # SMS words that subscribe in it
    join: list[Annotated[str, Field(min_length=2, max_length=30)]] = Field(default_factory=list)
    cap: Tag | None = None  # the tag CAP's <language> carries, when not `tag` (vi-VN)


class LanguagesFile(_Strict):
    """config/languages.yaml."""

    version: Literal[1]
    default: Tag
    # the language of the catalogs' message ids (the words as the code has them); it need not
    # be one the city speaks
    messages: Tag
    staff: list[Tag] = Field(min_length=1)
    languages: list[Language] = Field(min_length=1)


@dataclass(frozen=True)
class Languages:
    """The declared languages, in the order the file gives them."""

    declared: dict[str, Language]
    default: str
    staff: tuple[str, ...]
    messages: str = ""  # the language the catalogs' message ids are written in

    @property
    def tags(self) -> list[str]:
        """Every declared tag, in the file's order."""
        return list(self.declared)

    def names(self) -> dict[str, str]:
        """Tag -> the language's own name, for language switches and forms."""
        return {tag: lang.name for tag, lang in self.declared.items()}

    def known(self, tag: str) -> bool:
        """True when the city declares `tag` (as written: see `find`)."""
        return tag in self.declared

    def find(self, typed: str | None) -> str | None:
        """The declared tag `typed` names, in any letter case (BCP 47 tags are
        case-insensitive: `FR`, `zh-hant`), else None."""
        wanted = (typed or "").strip().casefold()
        return next((tag for tag in self.declared if tag.casefold() == wanted), None)

    def pick(self, tag: str | None) -> str:
        """The declared language `tag` names, else the city's default (for `?lang=`)."""
        return self.find(tag) or self.default

    def order(self, tag: str) -> tuple[str, ...]:
        """`tag`, then its fallbacks, then the default: what to try, in turn, for a reader
        of `tag` (an undeclared tag reads the default's order)."""
        first = self.declared.get(tag) or self.declared[self.default]
        chain = [first.tag, *first.fallback, self.default]
        return tuple(dict.fromkeys(chain))

    def best(self, tag: str, available: set[str] | list[str]) -> str | None:
        """The first language of `tag`'s order among `available`, else None."""
        have = set(available)
        return next((t for t in self.order(tag) if t in have), None)

    def staff_pair(self) -> tuple[str, str]:
        """The two staff languages the bilingual staff alerts are written in (Vietnamese,
        then English, in the demo); one language twice when only one is declared."""
        return self.staff[0], self.staff[1 if len(self.staff) > 1 else 0]

    def direction(self, tag: str) -> str:
        """`ltr` or `rtl`."""
        lang = self.declared.get(tag)
        return lang.direction if lang else "ltr"

    def query(self, tag: str) -> str:
        """`tag` as a page's `?lang=` value: "" for the city's own (its pages' default)."""
        return "" if tag == self.default else tag

    def cap_tag(self, tag: str) -> str:
        """What a CAP `<info>` in `tag` names as its `<language>`."""
        lang = self.declared.get(tag)
        return (lang.cap or lang.tag) if lang else tag

    @functools.cached_property
    def join_words(self) -> dict[str, str]:
        """Each SMS sign-up word, folded (`fold`), -> the language it subscribes in."""
        return {fold(word): tag for tag, lang in self.declared.items() for word in lang.join}


def without_diacritics(text: str) -> str:
    """`Đống Đa` -> `Dong Da`: without diacritics or combining marks, letter case kept."""
    text = text.replace("đ", "d").replace("Đ", "D")
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if unicodedata.category(c) != "Mn")


def fold(text: str) -> str:
    """Upper case without diacritics or combining marks, spaces collapsed: `Không` ->
    `KHONG`, `đ` -> `D` (how SMS words are compared, however they were typed)."""
    return " ".join(without_diacritics(text).upper().split())


def load_languages(source: YamlSource) -> Languages:
    """Validate config/languages.yaml; raises ConfigError naming the line and field."""
    parsed = validate_source(source, LanguagesFile)
    if isinstance(parsed, list):
        raise ConfigError("\n".join(parsed))
    declared: dict[str, Language] = {}
    for lang in parsed.languages:
        if lang.tag in declared:
            raise ConfigError(f"{source.path}: language {lang.tag!r} appears twice")
        declared[lang.tag] = lang
    named = [(f"languages.{lang.tag}.fallback", t) for lang in parsed.languages
             for t in lang.fallback]
    named += [("default", parsed.default)]  # `messages` need not be declared: ids' language
    named += [("staff", t) for t in parsed.staff]
    for where, tag in named:
        if tag not in declared:
            raise ConfigError(f"{source.path}: {where}: {tag!r} is not a declared language "
                              f"(declared: {', '.join(declared)})")
    words: dict[str, str] = dict.fromkeys(RESERVED_WORDS, "")
    for lang in parsed.languages:
        for word in lang.join:
            taken = words.setdefault(fold(word), lang.tag)
            if taken != lang.tag:
                why = f"subscribes in {taken}" if taken else "is an SMS keyword already"
                raise ConfigError(f"{source.path}: languages.{lang.tag}.join: {word!r} "
                                  f"{why} (words are compared without case or accents)")
    return Languages(declared, parsed.default, tuple(parsed.staff), parsed.messages)


# Words an SMS already means something by (carrier keywords, approvers' answers); a sign-up
# word may not be one of them.
RESERVED_WORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "START",
                  "UNSTOP", "HELP", "INFO", "YES", "Y", "CO", "OK", "DONG Y", "NO", "N",
                  "KHONG")
