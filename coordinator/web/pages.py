"""Rendering an HTML page with what every page needs (the account, the CSRF token)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from coordinator.web.security import csrf_token


def templates_of(request: Request) -> Jinja2Templates:
    """The app's templates."""
    templates: Jinja2Templates = request.app.state.templates
    return templates


class LazyCsrf:
    """The session's CSRF token, made only when a page really renders a form (so a public
    page without one sets no cookie and stays cacheable)."""

    def __init__(self, request: Request) -> None:
        self.request = request

    def __str__(self) -> str:
        return csrf_token(self.request)


def language_of(request: Request, typed: str | None = None) -> str:
    """The page's language: `typed` (else `?lang=`) when the city declares it, else the
    city's own."""
    languages = request.app.state.loa.city.languages
    found: str = languages.pick(typed or request.query_params.get("lang"))
    return found


def words_of(request: Request, typed: str | None = None) -> Callable[[str], str]:
    """The page's words: its language's message catalog (`_`)."""
    gettext: Callable[[str], str] = request.app.state.loa.city.catalogs.of(
        language_of(request, typed)).gettext
    return gettext


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A template rendered with `lang` (a declared language: `?lang=`, else the city's),
    its words (`_`, from the message catalogs), the language switch, the account (if any)
    and the CSRF token."""
    languages = request.app.state.loa.city.languages
    lang = context["lang"] = language_of(request, context.get("lang"))
    context.setdefault("_", words_of(request, lang))
    context.setdefault("languages", languages.names())
    context.setdefault("default_language", languages.default)
    context.setdefault("direction", languages.direction(lang))
    context.setdefault("area_map", request.app.state.loa.city.area_map)
    context.setdefault("account", getattr(request.state, "account", None))
    return templates_of(request).TemplateResponse(
        request, name, {"csrf": LazyCsrf(request), **context}, status_code=status)
