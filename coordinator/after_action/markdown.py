"""The after-action record as Markdown: what a press center files after an incident. Pure."""

from __future__ import annotations

from typing import Any


def _dur(seconds: float | None) -> str:
    """`4 min 05 s`, `38.2 s`, or `—`. Pure."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def _cell(text: Any) -> str:
    return str(text if text is not None else "—").replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows])


def record_markdown(f: dict[str, Any], chart: str | None = None) -> str:
    """The record; `chart` is the path of the deliveries chart to link, if one was drawn."""
    i, t = f["incident"], f["times"]
    lines = [f"# After-action record: {i['id']}: {i['title']}", ""]
    if i["exercise"]:
        lines += ["**EXERCISE (DIỄN TẬP)**: a drill, not a real emergency.", ""]
    lines += ["## Summary", "", *_table(["kind", "severity", "area", "status", "reports",
                                         "playbook", "opened", "closed"], [[
        i["kind"], i["severity"], i["area"], i["status"], i["report_count"], i["playbook"],
        i["opened_at"], i["closed_at"]]]), "",
        "## Times", "",
        f"- First report: {t['first_report_at']}",
        f"- First statement published: {t['first_statement_at'] or 'none'}",
        f"- First report to first statement: {_dur(t['first_report_to_first_statement_s'])}",
        *_claim_lines(f.get("claim")),
        "", "## Approvals", ""]
    rows = [[a["approval"], lv["level"], ", ".join(lv["holders"]), _dur(lv["held_s"]),
             a["outcome"] if n == len(a["levels"]) - 1 else "escalated",
             a["decided_by"] if n == len(a["levels"]) - 1 else ""]
            for a in f["approvals"] for n, lv in enumerate(a["levels"])]
    lines += [*(_table(["request", "level", "held by", "time at level", "outcome", "by"], rows)
                if rows else ["No approval was requested."]), ""]
    lines += ["## Statements", ""]
    for s in f["statements"]:
        lines += [f"### {s['id']} ({s['msg_type']}, {s['purpose']})", "",
                  f"Approved by {', '.join(s['approved_by']) or '—'} at {s['approved_at']}; "
                  f"published {s['published_at'] or 'never'}"
                  + (f"; withdrawn {s['withdrawn_at']}: {s['withdrawn_reason']}"
                     if s["withdrawn_at"] else "") + ".", ""]
        for text in s["texts"]:
            title = f" — {text['title']}" if text["title"] else ""
            lines += [f"**{text['channel']} / {text['language']}**{title}", "", "```text",
                      text["body"], "```", ""]
        lines += ["Reach per channel:", "", *_reach_rows(s["reach"]["by_channel"], None), "",
                  "Reach per area:", "", *_reach_rows(None, s["reach"]["by_area"]), ""]
    lines += ["## Corrections and updates", ""]
    lines += (_table(["statement", "kind", "drafted to published"],
                     [[c["statement"], c["purpose"], _dur(c["took_s"])]
                      for c in f["corrections"]])
              if f["corrections"] else ["None."])
    lines += ["", "## Deliveries over time", "",
              f"![Deliveries over time]({chart})" if chart else "No chart was drawn.", "",
              "## Timeline", "", *_table(["at", "action", "actor", "via", "subject"], [
                  [e["at"], e["action"], e["actor"], e["interface"], e["subject"]]
                  for e in f["timeline"]]), ""]
    return "\n".join(lines)


def _reach_rows(by_channel: dict[str, Any] | None, by_area: dict[str, Any] | None
                ) -> list[str]:
    head = ["targeted", "sent", "delivered", "failed", "skipped"]
    if by_channel is not None:
        rows = [[c, *[n[k] for k in head]] for c, n in by_channel.items()]
        return _table(["channel", *head], rows) if rows else ["No deliveries."]
    rows = [[a, c, *[n[k] for k in head]] for a, per in (by_area or {}).items()
            for c, n in per.items()]
    return _table(["area", "channel", *head], rows) if rows else ["No deliveries."]


def _claim_lines(claim: dict[str, Any] | None) -> list[str]:
    """The false claim, the fact, its source, and whether the correction met its clock."""
    if not claim:
        return []
    c = claim["correction"]
    verdict = {True: "met", False: "missed", None: "no correction yet"}[c["met"]]
    return ["", "## False claim", "",
            f"- Claim: {claim['claim']}", f"- Fact: {claim['fact'] or '(not stated)'}",
            f"- Source: {claim['source'] or '(not stated)'}",
            f"- First report to published correction: {_dur(c['took_s'])} "
            f"(goal {_dur(c['goal_s'])}, due {c['due_at']}): {verdict}"]
