"""The words Loa itself says to the public (page labels, buttons, confirmation messages,
severity words, drill marks) in every language the city declares: gettext catalogs in
``config/locale/<tag>/LC_MESSAGES/loa.po``, read with Babel at start.

Message ids are English (`messages: en` in config/languages.yaml). A missing translation
falls back along the language's fallback order (``Languages.order``) to the first catalog
that has it, passing over languages without a catalog, and ends with the id itself when
the order reaches the ids' own language (or ends). The template of all ids,
``config/locale/loa.pot``, is extracted with `make catalogs`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from gettext import NullTranslations
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from babel.support import Translations

from coordinator.errors import ConfigError
from coordinator.languages import Languages

DOMAIN = "loa"


def N_(message: str) -> str:  # gettext's name for "extract, translate later"
    """Marks an English message id for extraction; translated where it is used."""
    return message


def catalog_path(locale_dir: Path, tag: str) -> Path:
    """Where a language's catalog lives."""
    return locale_dir / tag / "LC_MESSAGES" / f"{DOMAIN}.po"


def _read(path: Path) -> Catalog:
    try:
        with path.open("rb") as fp:
            return read_po(fp, abort_invalid=True)
    except (OSError, PoFileError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the message catalog: {exc}") from exc


def _compiled(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, catalog)  # fuzzy entries are left out: they read as untranslated
    return buffer.getvalue()


@dataclass(frozen=True)
class Catalogs:
    """Each declared language's translations, its fallbacks chained behind it."""

    by_tag: dict[str, NullTranslations]
    missing: tuple[str, ...] = ()  # declared languages with no catalog of their own

    def of(self, tag: str) -> NullTranslations:
        """The translations a reader of `tag` gets (an undeclared tag: the message ids)."""
        return self.by_tag.get(tag) or NullTranslations()

    def gettext(self, tag: str, message: str) -> str:
        """`message` (an English id) in `tag`, else along its fallback order."""
        return self.of(tag).gettext(message)


def load_catalogs(locale_dir: Path, languages: Languages) -> Catalogs:
    """Read every declared language's catalog; raises ConfigError naming a broken file."""
    compiled = {tag: _compiled(_read(path)) for tag in languages.tags
                if (path := catalog_path(locale_dir, tag)).is_file()}
    by_tag: dict[str, NullTranslations] = {}
    for tag in languages.tags:
        chain: list[NullTranslations] = []
        for step in languages.order(tag):
            if step == languages.messages:
                break  # the ids are in this language: they end the chain
            if step in compiled:  # a language without a catalog (yet) is passed over
                chain.append(Translations(io.BytesIO(compiled[step]), domain=DOMAIN))
        head: NullTranslations = chain[0] if chain else NullTranslations()
        for later in chain[1:]:
            head.add_fallback(later)
        by_tag[tag] = head
    missing = tuple(t for t in languages.tags if t not in compiled and t != languages.messages)
    return Catalogs(by_tag, missing)
