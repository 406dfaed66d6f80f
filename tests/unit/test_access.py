"""The policy table, the scope rules and the exhaustion rule's grant, with exact values; and
that every route of the web app names the action it takes."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match, Mount, Route

from coordinator.access import (
    ANONYMOUS,
    POLICY,
    WHAT,
    Action,
    Principal,
    Role,
    Verdict,
    decide,
    may_publish_on_exhaustion,
    may_raise_severity,
)
from coordinator.city import City
from coordinator.events import Draft
from coordinator.plan.planner import exhaustion_for
from coordinator.playbooks.models import Playbook
from coordinator.reports.sources import namespaced_report_id, source_of
from coordinator.settings import REPO_ROOT
from coordinator.web.auth import route_actions
from tests.web_routes import flat_routes, offline_web_app


def token(role: Role, **scope: str) -> Principal:
    """A token principal with `role` and `scope` (department=, area=, person=)."""
    return Principal(kind="token", username="desk", role=role, **scope)


def test_the_policy_covers_every_action_and_hands_out_nothing_twice() -> None:
    """Every action has a row and words; only public doors are open to anonymous callers."""
    assert set(POLICY) == set(Action) == set(WHAT)
    open_to_anyone = {a for a, roles in POLICY.items() if Role.anonymous in roles}
    assert open_to_anyone == {Action.public_read, Action.subscribe, Action.tip_file,
                              Action.login, Action.signed_link, Action.provider_webhook}


@pytest.mark.parametrize(("role", "allowed"), [
    (Role.anonymous, False), (Role.reporter, True), (Role.duty_officer, True),
    (Role.approver, False), (Role.press, False), (Role.partner, False), (Role.monitor, False),
    (Role.admin, True)])
def test_who_may_file_a_report(role: Role, allowed: bool) -> None:
    """Reporters, duty officers and admins file reports; nobody else."""
    principal = ANONYMOUS if role == Role.anonymous else token(role)
    assert decide(principal, Action.report_file).allowed is allowed


def test_a_refusal_says_why_and_whether_a_credential_would_help() -> None:
    """Anonymous: 401 naming the action; a known caller without the right: 403 naming them."""
    assert decide(ANONYMOUS, Action.incident_read) == Verdict(
        False, "to see incidents you need a credential (an API token or a console login)", 401)
    assert decide(token(Role.press), Action.incident_read) == Verdict(
        False, "token:desk (press) may not see incidents: that is for duty officers, admins",
        403)


def test_an_area_scoped_reporter_reports_only_inside_its_area(city: City) -> None:
    """A ward's desk may report in the district's ward, not in another district."""
    desk = token(Role.reporter, area="hn-ba-dinh")
    inside = "hn-ba-dinh-kim-ma"
    assert decide(desk, Action.report_file, inside, {inside: city.ancestors(inside)}).allowed
    refused = decide(desk, Action.report_file, "hn-dong-da",
                     {"hn-dong-da": city.ancestors("hn-dong-da")})
    assert refused == Verdict(False, "token:desk may act only in hn-ba-dinh and the areas "
                                     "inside it, not in hn-dong-da", 403)


def test_actors_and_scopes_name_the_credential() -> None:
    """The audit actor is the credential's identity, never a typed name."""
    assert token(Role.reporter, department="fire-police").actor == "token:desk"
    assert token(Role.reporter, department="fire-police").scope == "department:fire-police"
    assert Principal(kind="session", username="an", role=Role.approver,
                     person_id="nguyen-van-an").actor == "nguyen-van-an"
    assert Principal(kind="session", username="root", role=Role.admin).actor == "account:root"
    assert Principal(kind="operator", username="mai", role=Role.admin).actor == "operator:mai"
    assert ANONYMOUS.actor == "anonymous" and not ANONYMOUS.verified


def test_report_ids_are_namespaced_by_their_client() -> None:
    """Two clients' `rep-1` are two reports; the source records the credential."""
    fire = token(Role.reporter, department="fire-police")
    officer = Principal(kind="session", username="trang", role=Role.duty_officer)
    assert namespaced_report_id(fire, "rep-1") == "t.desk:rep-1"
    assert namespaced_report_id(officer, "rep-1") == "s.trang:rep-1"
    given_again = dataclasses.replace(fire, credential="2")  # the name's second token
    assert namespaced_report_id(given_again, "rep-1") == "t.desk:2:rep-1"
    assert source_of(fire).model_dump() == {"actor": "token:desk", "role": "reporter",
                                            "scope": "department:fire-police", "verified": True}


@pytest.mark.parametrize(("scope", "verified", "publishes"), [
    ("department:fire-police", True, True),
    ("department:health", True, False),
    ("", True, False),  # a duty officer or the local operator: the city as a whole
    ("department:fire-police", False, False),
])
def test_publish_on_exhaustion_needs_a_granted_authenticated_source(
        scope: str, verified: bool, publishes: bool) -> None:
    """Only an authenticated reporter whose scope the playbook names."""
    assert may_publish_on_exhaustion(["department:fire-police"], scope, verified) is publishes


@pytest.mark.parametrize(("scope", "raises"), [
    ("area:hn-ba-dinh", True),  # the incident's own area
    ("area:hn", True),  # the city grouping that contains it
    ("area:hn-hoan-kiem", False),  # a neighbour: recorded, but does not raise it
    ("department:health", True),  # departments are not bound to an area
    ("", True),  # a duty officer: the whole city
])
def test_only_a_filer_whose_area_holds_the_incident_raises_its_severity(
        scope: str, raises: bool) -> None:
    assert may_raise_severity(scope, ["hn-ba-dinh", "hn"]) is raises
    assert may_raise_severity("area:hn-ba-dinh", []) is False  # an area the map lacks


def test_the_request_freezes_hold_for_an_ungranted_source(playbooks: dict[str, Playbook]
                                                          ) -> None:
    """The fire playbook's `publish` becomes `hold` for a report of the health department, or
    for an incident whose severity the health department raised; the request says why."""
    fire = playbooks["fire"]
    granted = {"source_actor": "token:fire-hq", "source_scope": "department:fire-police",
               "source_verified": "1"}
    other = {"source_actor": "token:clinic", "source_scope": "department:health",
             "source_verified": "1"}
    assert exhaustion_for(fire, granted) == ("publish", [])
    assert exhaustion_for(fire, other) == ("hold", [
        "`publish` on exhaustion does not apply: the incident was opened by token:clinic "
        "(department:health), which playbook fire does not name in publish_for: holding for "
        "a decision instead"])
    assert exhaustion_for(fire, {})[0] == "hold"  # an incident from before sources
    raised_by_clinic = {**granted, "severity_scope": "department:health"}
    assert exhaustion_for(fire, raised_by_clinic) == ("hold", [
        "`publish` on exhaustion does not apply: the severity was raised by a report from "
        "department:health, which playbook fire does not name in publish_for: holding for a "
        "decision instead"])
    raised_by_itself = {**granted, "severity_scope": "department:fire-police"}
    assert exhaustion_for(fire, raised_by_itself) == ("publish", [])


def test_a_translators_version_holds_where_the_duty_officers_would_publish(
        playbooks: dict[str, Playbook]) -> None:
    """A translator changes nothing but the other languages: their version goes out only
    once someone approves it, never on exhaustion; a duty officer's edit keeps `publish`."""
    fire = playbooks["fire"]
    granted = {"source_actor": "token:fire-hq", "source_scope": "department:fire-police",
               "source_verified": "1"}
    version = Draft(id="DRF-00001-3", incident_id="INC-00001", playbook_id="fire", version=3,
                    texts=[], rendered_at=datetime(2026, 12, 7, tzinfo=UTC), purpose="edit",
                    author="web:dich-vien", note="translation")
    assert exhaustion_for(fire, granted, version) == ("hold", [
        "`publish` on exhaustion does not apply: version 3 is a translation by "
        "web:dich-vien, which goes out only once approved: holding for a decision instead"])
    edited = version.model_copy(update={"author": "web:truc-ban", "note": "sửa giờ"})
    assert exhaustion_for(fire, granted, edited) == ("publish", [])


# `locked_route`s: the busiest, without FastAPI's dependency solving
PLAIN_ROUTES = {"/hooks/twilio/status", "/api/reports"}


def test_every_route_names_the_action_it_takes() -> None:
    """No door without a lock: each route depends on exactly one `allow(action)` (or is a
    `locked_route`); the static files are the only mount, and are public."""
    unlocked = []
    for route in flat_routes(offline_web_app().router.routes):
        if isinstance(route, Mount):
            assert route.path == "/static"
            continue
        assert isinstance(route, APIRoute) or route.path in PLAIN_ROUTES, route
        if len(route_actions(route)) != 1:
            unlocked.append(f"{sorted(route.methods)} {route.path}")
    assert unlocked == []


def test_reports_are_served_plainly_and_declared_in_the_schema() -> None:
    """POST /api/reports is served by its plain `locked_route`, matched before the `api`
    router's declaration of the same path (which the schema shows), behind the same lock."""
    app = offline_web_app()
    scope = {"type": "http", "method": "POST", "path": "/api/reports"}
    matched = [r for r in flat_routes(app.router.routes)
               if not isinstance(r, Mount) and r.matches(scope)[0] == Match.FULL]
    assert [type(r) for r in matched] == [Route, APIRoute]
    assert route_actions(matched[0]) == route_actions(matched[1]) == [Action.report_file]
    assert app.openapi()["paths"]["/api/reports"]["post"]["security"] == [{"token": []}]


def test_the_documented_route_table_is_the_code() -> None:
    """docs/access.md lists every route with its action, and nothing else."""
    served = set()
    for route in flat_routes(offline_web_app().router.routes):
        if not isinstance(route, Mount):
            action = route_actions(route)[0]
            served |= {f"| `{m} {route.path}` | `{action.value}` |" for m in route.methods}
    documented = {line for line in (REPO_ROOT / "docs" / "access.md").read_text(
        encoding="utf-8").splitlines() if re.match(r"^\| `(GET|POST) /", line)}
    assert documented == served
