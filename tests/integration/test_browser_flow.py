"""The web as its people use it, in a real browser (the system Chromium under Playwright):
a duty officer logs in and files a report, an approver logs in and approves, and a public
page opened before the approval shows the statement without a reload. Screenshots of each
page go to the test run's artifacts folder."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.integration.browser import Chromium, shot
from tests.integration.stack import Stack
from tests.integration.webclient import totp_code

pytestmark = pytest.mark.integration
AREA = "hn-dong-da-lang-ha"


def log_in(browser: Browser, web_url: str, username: str, password: str, start: str,
           totp_secret: str | None = None) -> Page:
    """A fresh context, logged in through the login form (reached by a redirect); with a
    TOTP secret, the code typed on the second step as from an authenticator app."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{web_url}{start}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Tên đăng nhập / Username").fill(username)
    page.get_by_label("Mật khẩu / Password").fill(password)
    page.get_by_role("button", name="Đăng nhập / Log in").click()
    if totp_secret:
        expect(page).to_have_url(f"{web_url}/login/code")
        shot(page, "login-code")
        page.get_by_label("Mã / Code").fill(totp_code(totp_secret))
        page.get_by_role("button", name="Xác nhận / Confirm").click()
    return page


def test_officer_files_approver_approves_public_page_updates_live(
        stack: Stack, browser: Chromium) -> None:
    web_url = stack.web_url or stack.start_web()
    officer_pw = stack.account("trang", "duty_officer", "nguyen-thu-trang")
    approver_pw = stack.account("thuha", "approver", "le-thi-thu-ha")
    title = f"Ngập phố Láng Hạ <script>alert('x')</script> {uuid.uuid4().hex[:4]}"
    dialogs: list[str] = []

    with browser.awake() as chromium:
        public = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
        public.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        public.goto(f"{web_url}/?area={AREA}&lang=vi")
        expect(public.locator("#live-status")).to_be_visible()  # the event stream is open
        public.evaluate("window.__loaded_once = true")

        resident = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
        resident.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        resident.goto(f"{web_url}/tip?lang=vi")
        resident.get_by_label("Nội dung").fill(f"{title}: nước đang lên nhanh")
        resident.get_by_label("Loại").select_option("flood")
        resident.get_by_label("Khu vực").select_option(AREA)
        resident.get_by_role("button", name="Gửi").click()
        expect(resident.locator("#outcome")).to_contain_text("Mã tin: TIP-")
        tip_id = re.findall(r"TIP-[0-9a-f]{12}", resident.locator("#outcome").inner_text())[0]
        shot(resident, "tip-sent")
        resident.context.close()

        officer = log_in(chromium, web_url, "trang", officer_pw, "/console",
                         stack.totp_secrets["trang"])
        officer.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        expect(officer).to_have_url(f"{web_url}/console")
        shot(officer, "console-board-before")
        officer.get_by_role("link", name="+ Báo cáo mới / File a report").click()
        officer.get_by_label("Loại / Kind").fill("flood")
        officer.get_by_label("Mức độ / Severity").select_option("severe")
        officer.get_by_label("Khu vực / Area").select_option(AREA)
        officer.get_by_label("Tiêu đề / Title").fill(title)
        officer.get_by_label("Chi tiết / Details").fill("Nước ngập 30 cm, xe máy chết máy.")
        shot(officer, "console-report-form")
        officer.get_by_role("button", name="Gửi / File report").click()
        expect(officer).to_have_url(re.compile(r"/console/incidents/INC-\d+$"))
        incident_id = officer.url.rsplit("/", 1)[1]
        expect(officer.locator("h2").first).to_contain_text(title)  # as text, not markup
        expect(officer.locator("#approval")).to_contain_text(f"APR-{incident_id[4:]}-1",
                                                             timeout=30_000)
        expect(officer.locator("#preview")).to_contain_text("SMS segment(s)")
        shot(officer, "console-incident")
        officer.get_by_role("link", name="Sự cố / Incidents").click()
        row = officer.locator(f"#row-{incident_id}")
        expect(row).to_contain_text("Lê Thị Thu Hà")
        expect(row.locator(".countdown")).to_have_text(re.compile(r"còn / left \d+:\d\d"))
        shot(officer, "console-board")
        tip = officer.locator(f"#tip-{tip_id}")
        expect(tip).to_contain_text("nước đang lên nhanh")  # unverified, on the board
        tip.get_by_placeholder("INC-00001").fill(incident_id)
        tip.get_by_role("button", name="Gắn / Attach").click()
        expect(officer).to_have_url(f"{web_url}/console/incidents/{incident_id}")
        expect(officer.locator("#flash")).to_contain_text(f"{tip_id} attached to {incident_id}")
        expect(officer.locator("h2").first).to_contain_text(title)  # the title is unchanged

        approver = log_in(chromium, web_url, "thuha", approver_pw, "/inbox")
        expect(approver).to_have_url(f"{web_url}/inbox")
        approval_id = f"APR-{incident_id[4:]}-1"
        expect(approver.locator("#mine")).to_contain_text(approval_id)
        shot(approver, "inbox")
        approver.get_by_role("link", name=approval_id).click()
        expect(approver.get_by_label("body web en")).to_be_visible()
        shot(approver, "inbox-request")
        approver.locator("#approve").click()
        expect(approver.locator("#outcome")).to_contain_text(
            f"approved; statement STM-{incident_id[4:]}-1 goes out")
        shot(approver, "inbox-decided")

        statement = public.locator(f"#STM-{incident_id[4:]}-1")
        expect(statement).to_be_visible(timeout=30_000)
        expect(statement).to_contain_text("<script>alert('x')</script>")
        assert public.evaluate("window.__loaded_once") is True  # no reload happened
        shot(public, "public-live")

        public.goto(f"{web_url}/press?q=lang ha")
        expect(public.locator(f"#press-{incident_id}")).to_be_visible()
        shot(public, "press")
        for page in (public, officer, approver):
            page.context.close()
    assert dialogs == []  # the <script> in the title never ran
