"""Render a playbook's templates for an incident (Jinja2, sandboxed, StrictUndefined).

Pure: the time of issue is an argument.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from channels.segments import segment_count
from coordinator.city import City
from coordinator.errors import TemplateRenderError
from coordinator.events import RenderedText, Severity
from coordinator.playbooks.models import EmailTemplate, Playbook, SmsTemplate, WebTemplate
from coordinator.translations import N_, Catalogs

# The words Loa puts into statements are English message ids, said in each language by
# the message catalogs (config/locale): the severity, a drill's mark, a change line's label.
SEVERITY_WORDS = {"minor": N_("minor"), "moderate": N_("moderate"), "severe": N_("severe"),
                  "extreme": N_("extreme")}
EXERCISE_MARK = N_("[EXERCISE]")
"""What starts every text of a drill, in its language."""


def exercise_mark(language: str, catalogs: Catalogs) -> str:
    """The drill mark of a language. Pure."""
    return catalogs.gettext(language, EXERCISE_MARK)


BLANK = re.compile(r"\[\[(.+?)\]\]", re.S)
"""A blank a template leaves for a person to fill in before approval: `[[what goes here]]`
(the misinformation playbook's fact, until someone states it)."""


def not_a_blank(value: str) -> str:
    """Text from a report or a person, made unable to read as a blank when a template puts
    it in a draft: `[[` and `]]` get a space (`[ [`), so a claim quoted with brackets does
    not stop its correction from being approved. Pure."""
    return value.replace("[[", "[ [").replace("]]", "] ]")


def blanks(texts: list[RenderedText]) -> list[str]:
    """`channel/language: [[…]]` for every blank still in the texts, in order. Pure."""
    return [f"{t.channel}/{t.language}: [[{m.group(1)}]]"
            for t in texts for m in BLANK.finditer(f"{t.title}\n{t.body}")]


def marked_as_exercise(texts: list[RenderedText], catalogs: Catalogs) -> list[RenderedText]:
    """A drill's texts: each title and body starts with its language's mark (once, however
    often this is applied); SMS segments counted again. Pure."""
    def mark(text: str, language: str) -> str:
        tag = exercise_mark(language, catalogs)
        return text if not text or text.startswith(tag) else f"{tag} {text}"

    out = []
    for t in texts:
        body = mark(t.body, t.language)
        out.append(t.model_copy(update={
            "title": mark(t.title, t.language) if t.title else t.title, "body": body,
            **({"segments": segment_count(body)} if t.channel == "sms" else {})}))
    return out


CHANGE_LABELS = {"update": N_("UPDATE"), "correction": N_("CORRECTION"),
                 "all_clear": N_("ALL CLEAR")}
"""The word that opens a later version's change line (said in the text's language)."""
CHANGE_LINE_MAX = 160


def with_change_line(texts: list[RenderedText], purpose: str, change: str,
                     catalogs: Catalogs) -> list[RenderedText]:
    """A later version's texts, each body opening with one line that says what changed
    (`UPDATE: …`, the officer's words), once. Unchanged without them or for a purpose that
    is no update, correction or all-clear. Pure."""
    said = change.strip().splitlines()[0][:CHANGE_LINE_MAX].strip() if change.strip() else ""
    if not said or purpose not in CHANGE_LABELS:
        return texts
    out = []
    for t in texts:
        line = f"{catalogs.gettext(t.language, CHANGE_LABELS[purpose])}: {said}"
        body = t.body if t.body.startswith(line) else f"{line}\n{t.body}"
        out.append(t.model_copy(update={
            "body": body, **({"segments": segment_count(body)} if t.channel == "sms" else {})}))
    return out


# Plain text out (SMS, email text, the web page escapes at display time); sandboxed
# because playbooks are data that duty officers edit.
_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


@dataclass(frozen=True)
class IncidentFacts:
    """What templates may say about an incident."""

    id: str
    kind: str
    severity: Severity
    title: str
    details: str
    area: str
    report_count: int = 1
    link: str = ""  # the statement's short web link, for SMS
    exercise: bool = False  # a drill: every text starts with EXERCISE_MARKS
    claim: str = ""  # false information: the claim as first reported
    fact: str = ""  # ... the verified fact, once someone set it (else the template's blank)
    fact_source: str = ""  # ... and its source


def facts_of(incident: dict[str, str]) -> IncidentFacts:
    """The template facts of a stored incident."""
    return IncidentFacts(
        id=incident["id"], kind=incident["kind"], severity=Severity(incident["severity"]),
        title=incident["title"], details=incident["details"], area=incident["area"],
        report_count=int(incident.get("report_count", 1)),
        exercise=incident.get("exercise") == "1", claim=incident.get("claim", ""),
        fact=incident.get("fact", ""), fact_source=incident.get("fact_source", ""),
    )


def template_context(
    facts: IncidentFacts, playbook: Playbook, city: City, language: str, now: datetime, tz: str
) -> dict[str, object]:
    """The variables a template sees, in one language."""
    area = city.areas.get(facts.area)
    parent = city.areas.get(area.parent) if area and area.parent else None
    department = city.departments.get(playbook.approval.department) if playbook.approval else None
    return {
        "incident": {
            "id": facts.id, "kind": facts.kind, "severity": facts.severity.value,
            "title": not_a_blank(facts.title), "details": not_a_blank(facts.details),
            "report_count": facts.report_count, "claim": not_a_blank(facts.claim),
            "fact": not_a_blank(facts.fact), "source": not_a_blank(facts.fact_source),
        },
        "area": {
            "code": facts.area,
            "name": area.name_in(language) if area else facts.area,
            "parent_name": parent.name_in(language) if parent else "",
        },
        "severity_label": city.catalogs.gettext(language, SEVERITY_WORDS[facts.severity]),
        "department": {
            "name": (department.name.get(language) or department.id) if department else "",
        },
        "issued_at": now.astimezone(ZoneInfo(tz)).strftime("%H:%M %d/%m/%Y"),
        # the reader's own page: the city's language needs no `?lang=`
        "link": f"{facts.link}?lang={language}"
        if facts.link and city.languages.query(language) else facts.link,
    }


@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> Template:
    # Compiling is far slower than rendering; playbooks change only on restart.
    template = _env.from_string(source)
    # Every render copies the template's globals into its context; kept as jinja's
    # ChainMap (over the environment's), that copy was a third of a draft's rendering.
    template.globals = dict(template.globals)
    return template


def render_text(source: str, context: dict[str, object], loc: tuple[str, ...]) -> str:
    """Render one template string; raises TemplateRenderError naming its place `loc`."""
    try:
        return _compiled(source).render(context).strip()
    except (TemplateError, OverflowError) as exc:  # the sandbox's range limit: OverflowError
        raise TemplateRenderError(f"{'.'.join(loc)}: {exc}", loc) from exc


def render_draft(
    playbook: Playbook, facts: IncidentFacts, city: City, now: datetime, tz: str
) -> list[RenderedText]:
    """Every channel in every language of a playbook; raises TemplateRenderError."""
    texts = []
    for language in playbook.languages:
        ctx = template_context(facts, playbook, city, language, now, tz)
        for channel in playbook.channels:
            where = ("templates", language, channel)
            tpl = playbook.template(language, channel)
            if isinstance(tpl, WebTemplate):
                texts.append(RenderedText(
                    channel="web", language=language,
                    title=render_text(tpl.title, ctx, (*where, "title")),
                    body=render_text(tpl.body, ctx, (*where, "body")),
                ))
            elif isinstance(tpl, EmailTemplate):
                texts.append(RenderedText(
                    channel="email", language=language,
                    title=render_text(tpl.subject, ctx, (*where, "subject")),
                    body=render_text(tpl.body, ctx, (*where, "body")),
                ))
            elif isinstance(tpl, SmsTemplate):
                body = render_text(tpl.text, ctx, (*where, "text"))
                texts.append(RenderedText(
                    channel="sms", language=language, body=body,
                    segments=segment_count(body), segment_budget=tpl.segment_budget,
                ))
    return marked_as_exercise(texts, city.catalogs) if facts.exercise else texts
