"""False claims, the pure parts: folding and shingles, which retellings count as the same
rumour, the report rules, where a claim report goes, a merge's refusals, the trend, the
blanks a correction must have filled before approval, its clock and its ClaimReview."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from coordinator.approvals.decisions import unfilled
from coordinator.city import load_city
from coordinator.events import Decision, Draft, RenderedText, Report, Severity
from coordinator.feeds.claim_review import claim_review, script_json
from coordinator.incidents.actions import merge_refusal
from coordinator.incidents.claims import (
    CorrectionClock,
    best_match,
    fold,
    shingles,
    similarity,
)
from coordinator.model.incident import IncidentStatus, merged, opened
from coordinator.model.trend import trend
from coordinator.playbooks.loader import load_playbooks
from coordinator.playbooks.render import IncidentFacts, blanks, not_a_blank, render_draft
from coordinator.reports.filing import report_problems
from coordinator.settings import Settings
from tests.conftest import FIXTURE_MAP

AT = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
WATER = "Nước máy ở Hoàn Kiếm bị nhiễm độc, không được uống!"


def claim_report(claim: str = WATER, **extra: object) -> Report:
    fields: dict[str, object] = {"id": "token:t:1", "kind": "misinformation",
                                 "severity": Severity.moderate, "area": "hn-hoan-kiem",
                                 "title": "Tin đồn nước nhiễm độc", "claim": claim,
                                 "received_at": AT, **extra}
    return Report(**fields)  # type: ignore[arg-type]


def test_folding_drops_case_diacritics_punctuation_and_spacing() -> None:
    assert fold(WATER) == "nuoc may o hoan kiem bi nhiem doc khong duoc uong"
    assert fold("  ĐÊ   vỡ!!! ") == "de vo"
    assert shingles("Đê vỡ!") == frozenset({"de ", "e v", " vo"})
    assert shingles("Ô") == frozenset({"o"}) and shingles("?!") == frozenset()


def test_retellings_score_high_and_other_rumours_low() -> None:
    # (shared shingles / all shingles), counted by hand from the folded texts' runs of three
    assert similarity(WATER, "nuoc may o hoan kiem bi nhiem doc khong duoc uong") == 1.0
    assert similarity(WATER, "Nước máy tại Hoàn Kiếm bị nhiễm độc, đừng uống") == 31 / 50
    assert similarity(WATER, "NƯỚC MÁY Ở HOÀN KIẾM BỊ NHIỄM ĐỘC!!! Không được uống, chia sẻ "
                             "ngay") == 41 / 53
    assert similarity(WATER, "Nước máy ở Ba Đình bị mất, không có nước") == 16 / 59
    assert similarity(WATER, "Tap water in Hoan Kiem is poisoned, do not drink") == 10 / 76
    assert similarity(WATER, "") == 0.0


def test_the_closest_open_rumour_above_the_threshold_wins() -> None:
    variants = {"INC-00001": ["Cầu Long Biên sắp sập, không được đi qua"],
                "INC-00002": ["Nước máy ở Ba Đình bị mất, không có nước",
                              "Nước máy tại Hoàn Kiếm bị nhiễm độc, đừng uống"]}
    match = best_match(WATER, variants, 0.4)
    assert match is not None and (match.incident_id, match.score) == ("INC-00002", 31 / 50)
    assert best_match(WATER, variants, 0.7) is None
    assert best_match("Tap water in Hoan Kiem is poisoned", variants, 0.4) is None


def test_a_claim_kind_needs_its_claim_and_other_kinds_take_none() -> None:
    city = load_city(Settings(_env_file=None).config_dir, FIXTURE_MAP)  # type: ignore[call-arg]
    assert {k for k, kind in city.kinds.items() if kind.claims} == {"misinformation", "rumor"}
    assert report_problems(claim_report(), city) == []
    [(field, why)] = report_problems(claim_report(claim=""), city)
    assert field == "claim" and "says what the false claim is" in why
    flood = Report(id="token:t:2", kind="flood", severity=Severity.severe, area="hn-hoan-kiem",
                   title="Ngập", spreading=["https://example.org/post/1"], received_at=AT)
    [(field, why)] = report_problems(flood, city)
    assert field == "claim" and "misinformation, rumor" in why


def test_claims_share_one_correlation_key_whatever_their_area_drills_apart() -> None:
    assert claim_report().correlation_key() == "claims"
    assert claim_report(area="hn-ba-dinh").correlation_key() == "claims"
    assert claim_report(exercise=True).correlation_key() == "claims:exercise"


def test_a_merge_closes_the_incident_pointing_at_the_other() -> None:
    gone, into = opened("INC-00002", claim_report()), opened("INC-00001", claim_report())
    assert gone.claim == WATER and gone.to_hash()["claim"] == WATER
    fields = merged(gone, into, AT)
    assert fields["status"] == "closed" and fields["merged_into"] == "INC-00001"
    assert fields["status_reason"] == "merged into INC-00001"
    assert gone.evolve(fields).merged_into == "INC-00001"


def test_a_merge_is_refused_when_it_would_lose_or_mix_something() -> None:
    gone, into = opened("INC-00002", claim_report()), opened("INC-00001", claim_report())
    assert merge_refusal(gone, into) is None
    assert merge_refusal(gone, gone) == "an incident cannot be merged into itself"
    closed_one = replace(into, status=IncidentStatus.closed)
    assert merge_refusal(gone, closed_one) == "INC-00001 is closed"
    drill = replace(into, exercise=True)
    assert merge_refusal(gone, drill) == "a drill and a real incident are kept apart"
    public = replace(gone, published=("STM-00002-1",), status=IncidentStatus.published)
    assert merge_refusal(public, into) == (
        "INC-00002 has published statements (STM-00002-1); merge the other way, or give "
        "INC-00002 its all-clear and close it")


def test_the_trend_compares_the_last_window_with_the_one_before() -> None:
    now = AT.timestamp()
    times = [now - 1500, now - 1100, now - 900, now - 300, now - 5]
    steady = trend(times, now, 600)
    assert (steady.recent, steady.before, steady.direction) == (2, 2, "steady")
    assert trend([*times, now - 1], now, 600).direction == "rising"
    assert trend(times[:3], now, 600).to_json() == {"direction": "falling", "recent": 0,
                                                    "before": 2, "window_s": 600}
    assert trend([], now, 600).direction == "steady"
    assert trend([(AT + timedelta(seconds=3)).timestamp()], now, 600).recent == 1


def _draft(body: str) -> Draft:
    return Draft(id="DRF-00001-1", incident_id="INC-00001", playbook_id="misinformation",
                 version=1, rendered_at=AT, texts=[
                     RenderedText(channel="web", language="vi", title="Cải chính", body=body),
                     RenderedText(channel="web", language="en", title="Correction",
                                  body="Fact: [[state the\nverified fact]]")])


def test_a_draft_with_blanks_cannot_be_approved_until_they_are_filled() -> None:
    draft = _draft("Sự thật: [[Sở Y tế ghi rõ sự thật]]")
    assert blanks(draft.texts) == ["web/vi: [[Sở Y tế ghi rõ sự thật]]",
                                   "web/en: [[state the\nverified fact]]"]
    decision = Decision(id="dec-000001", approval_id="APR-00001-1", approver_id="tam",
                        verdict="approve")
    assert unfilled(draft, decision) == (
        "the draft still has blanks to fill in (web/vi: [[Sở Y tế ghi rõ sự thật]]; web/en: "
        "[[state the\nverified fact]]): edit them in and approve, or ask the duty officer "
        "to set the fact (`loa incident fact`)")
    filled = decision.model_copy(update={"texts": [
        RenderedText(channel="web", language="vi", title="Cải chính", body="Sự thật: an toàn."),
        RenderedText(channel="web", language="en", title="Correction", body="Fact: safe.")]})
    assert unfilled(draft, filled) is None
    assert blanks(_draft("[single] brackets [are] text").texts[:1]) == []


def test_brackets_in_a_claim_or_fact_are_no_blank_but_the_templates_own_are() -> None:
    assert not_a_blank("Chia sẻ [[KHẨN]] ngay]]") == "Chia sẻ [ [KHẨN] ] ngay] ]"
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    city = load_city(settings.config_dir, FIXTURE_MAP)
    playbook = load_playbooks(settings.playbooks_dir, city)["misinformation"]
    facts = IncidentFacts(id="INC-00001", kind="misinformation", severity=Severity.moderate,
                          title="Tin đồn", details="", area="hn-hoan-kiem",
                          claim="Nước máy [[đã nhiễm độc]], chia sẻ ngay")
    unstated = render_draft(playbook, facts, city, AT, "Asia/Ho_Chi_Minh")
    assert blanks(unstated) and not any("đã nhiễm độc" in b for b in blanks(unstated))
    stated = replace(facts, fact="Nước đạt chuẩn [[QCVN 01]].", fact_source="Sở Y tế")
    texts = render_draft(playbook, stated, city, AT, "Asia/Ho_Chi_Minh")
    assert blanks(texts) == []
    assert any("Nước máy [ [đã nhiễm độc] ], chia sẻ ngay" in t.body for t in texts)


def test_the_correction_clock_says_when_it_is_due_and_whether_it_was_met() -> None:
    clock = CorrectionClock(AT, 3600, None)
    assert clock.due_at == AT + timedelta(hours=1) and clock.met() is None
    assert clock.took_s(AT + timedelta(minutes=25)) == 1500
    late = CorrectionClock(AT, 3600, AT + timedelta(minutes=61))
    assert late.met() is False and late.to_json(AT) == {
        "goal_s": 3600, "due_at": "2026-12-04T09:00:00+00:00",
        "corrected_at": "2026-12-04T09:01:00+00:00", "took_s": 3660, "met": False}
    assert CorrectionClock(AT, 3600, AT + timedelta(minutes=60)).met() is True


def test_a_correction_carries_its_claim_review() -> None:
    # Reported at 06:30 and corrected at 07:40 in Hanoi: both on 4 December there, though
    # the first was 3 December in UTC.
    statement = {"id": "STM-00001-2", "published_at": "2026-12-04T00:40:00+00:00"}
    claim = {"claim": "Nước máy ở Hoàn Kiếm bị nhiễm độc", "first_reported_at":
             "2026-12-03T23:30:00+00:00", "spreading": [
                 "https://facebook.example/p/1", "ảnh chụp nhóm Zalo cư dân"]}
    assert claim_review(statement, claim, "https://loa.hanoi.example", "vi",
                        "Asia/Ho_Chi_Minh", "Sai sự thật") == {
        "@context": "https://schema.org", "@type": "ClaimReview",
        "url": "https://loa.hanoi.example/statements/STM-00001-2",
        "datePublished": "2026-12-04", "inLanguage": "vi",
        "author": {"@type": "Organization", "name": "Loa",
                   "url": "https://loa.hanoi.example"},
        "claimReviewed": "Nước máy ở Hoàn Kiếm bị nhiễm độc",
        "itemReviewed": {"@type": "Claim", "datePublished": "2026-12-04", "appearance": [
            {"@type": "CreativeWork", "url": "https://facebook.example/p/1"}]},
        "reviewRating": {"@type": "Rating", "ratingValue": 1, "bestRating": 5,
                         "worstRating": 1, "alternateName": "Sai sự thật"}}
    assert script_json({"claim": "</script><b>&"}) == (
        '{"claim": "\\u003c/script\\u003e\\u003cb\\u003e\\u0026"}')
