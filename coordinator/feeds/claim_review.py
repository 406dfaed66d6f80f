"""schema.org `ClaimReview` for a published correction of false information. Pure.

Search engines and fact-check aggregators read it as JSON-LD in the statement's page
(https://schema.org/ClaimReview). The rating is the lowest on a 1-to-5 scale, named
"False": Loa publishes a correction only for a claim the city found false.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

PUBLISHER = "Loa"


def claim_review(statement: dict[str, Any], claim: dict[str, Any], base_url: str,
                 language: str, timezone: str, false: str = "False") -> dict[str, Any]:
    """The ClaimReview of `statement` (published), correcting `claim`: its text, when it was
    first reported, and where it was spreading (links only). Dates are the city's own
    (`timezone`): a claim reported at 06:30 in Hanoi was reported that day, not the day
    before in UTC. `false` names the rating in `language` (the catalogs' "False")."""
    zone = ZoneInfo(timezone)

    def day(stamp: str) -> str:
        return datetime.fromisoformat(stamp).astimezone(zone).date().isoformat()

    links = [s for s in claim.get("spreading", []) if s.startswith(("https://", "http://"))]
    return {
        "@context": "https://schema.org",
        "@type": "ClaimReview",
        "url": f"{base_url}/statements/{statement['id']}",
        "datePublished": day(statement["published_at"]),
        "inLanguage": language,
        "author": {"@type": "Organization", "name": PUBLISHER, "url": base_url},
        "claimReviewed": claim["claim"],
        "itemReviewed": {
            "@type": "Claim",
            "datePublished": day(claim["first_reported_at"]),
            **({"appearance": [{"@type": "CreativeWork", "url": u} for u in links]}
               if links else {}),
        },
        "reviewRating": {"@type": "Rating", "ratingValue": 1, "bestRating": 5,
                         "worstRating": 1, "alternateName": false},
    }


def script_json(data: dict[str, Any]) -> str:
    """JSON safe inside <script type="application/ld+json">: no `<`, `>` or `&` as is."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
