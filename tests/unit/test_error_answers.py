"""The 422 answer names what is wrong: each invalid field by its path, and a body that is
no JSON at all by the line and column where reading stopped, as FastAPI itself reports
the errors (a small app with the web's handler, in process)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from coordinator.web.error_pages import validation_error


class Body(BaseModel):
    title: str
    count: int


def app() -> FastAPI:
    made = FastAPI()
    made.add_exception_handler(RequestValidationError, validation_error)

    @made.post("/things")
    async def things(body: Body) -> dict[str, str]:
        return {"title": body.title}

    return made


@pytest.mark.parametrize(("raw", "errors"), [
    # a trailing comma; columns count characters (ậ is one), not bytes
    ('{"title": "Ngập", "count": 2,}',
     [{"field": "body", "message": "not valid JSON: Expecting property name enclosed in "
                                   "double quotes at line 1 column 30"}]),
    ('{\n  "title": "Ngập phố",\n  "count" 2\n}',  # the third line, after its key
     [{"field": "body", "message": "not valid JSON: Expecting ':' delimiter at line 3 "
                                   "column 11"}]),
    ('{"title": "x", "count": "two"}',
     [{"field": "count", "message": "Input should be a valid integer, unable to parse "
                                    "string as an integer"}]),
    ('{"count": 1}', [{"field": "title", "message": "Field required"}]),
])
async def test_each_error_is_named_by_its_field_or_its_line(raw: str,
                                                            errors: list[dict[str, str]]
                                                            ) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()),
                                 base_url="http://loa.test") as http:
        answer = await http.post("/things", content=raw.encode(),
                                 headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["errors"] == errors
    assert answer.json()["detail"] == "invalid request: " + "; ".join(
        f"{e['field']}: {e['message']}" for e in errors)
