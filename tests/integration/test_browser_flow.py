"""The web as its people use it, in a real browser (the system Chromium under Playwright):
a duty officer logs in and files a report, an approver logs in and approves, and a public
page opened before the approval shows the statement without a reload; a resident subscribes
and leaves through the web forms. Screenshots of each page go to the test run's artifacts
folder, and axe-core checks each distinct page against the WCAG 2.1 A/AA rules."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.integration.browser import Chromium, assert_accessible, assert_drawn, shot
from tests.integration.factories import link_in, mail_to, new_email, new_phone, sms_code
from tests.integration.smtp_server import Inbox
from tests.integration.stack import Stack
from tests.integration.webclient import totp_code

pytestmark = pytest.mark.integration
AREA = "hn-dong-da-lang-ha"


def keep_dialogs(page: Page, dialogs: list[str]) -> None:
    """Dismiss every dialog `page` opens (an `alert` would be a script that ran), keeping
    its message in `dialogs`."""

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)


def log_in(browser: Browser, web_url: str, username: str, password: str, start: str,
           totp_secret: str | None = None) -> Page:
    """A fresh context, logged in through the login form (reached by a redirect); with a
    TOTP secret, the code typed on the second step as from an authenticator app."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{web_url}{start}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    assert_accessible(page, "login")
    page.get_by_label("Tên đăng nhập / Username").fill(username)
    page.get_by_label("Mật khẩu / Password").fill(password)
    page.get_by_role("button", name="Đăng nhập / Log in").click()
    if totp_secret:
        expect(page).to_have_url(f"{web_url}/login/code")
        shot(page, "login-code")
        assert_accessible(page, "login-code")
        page.get_by_label("Mã / Code").fill(totp_code(totp_secret))
        page.get_by_role("button", name="Xác nhận / Confirm").click()
    return page


def test_officer_files_approver_approves_public_page_updates_live(
        stack: Stack, browser: Chromium) -> None:
    """A report filed and approved in the browser shows on an open public page with no reload."""
    web_url = stack.web_url or stack.start_web()
    officer_pw = stack.account("trang", "duty_officer", "nguyen-thu-trang")
    approver_pw = stack.account("thuha", "approver", "le-thi-thu-ha")
    title = f"Ngập phố Láng Hạ <script>alert('x')</script> {uuid.uuid4().hex[:4]}"
    dialogs: list[str] = []

    with browser.awake() as chromium:
        public = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
        keep_dialogs(public, dialogs)
        public.goto(f"{web_url}/?area={AREA}&lang=vi")
        expect(public.locator("#live-status")).to_be_visible()  # the event stream is open
        public.evaluate("window.__loaded_once = true")
        assert_accessible(public, "public-index")

        resident = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
        keep_dialogs(resident, dialogs)
        resident.goto(f"{web_url}/tip?lang=vi")
        assert_accessible(resident, "tip-form")
        resident.get_by_label("Nội dung").fill(f"{title}: nước đang lên nhanh")
        resident.get_by_label("Loại").select_option("flood")
        resident.get_by_label("Khu vực").select_option(AREA)
        resident.get_by_role("button", name="Gửi").click()
        expect(resident.locator("#outcome")).to_contain_text("Mã tin: TIP-")
        tip_id = re.findall(r"TIP-[0-9a-f]{12}", resident.locator("#outcome").inner_text())[0]
        shot(resident, "tip-sent")
        assert_accessible(resident, "tip-sent")
        resident.context.close()

        officer = log_in(chromium, web_url, "trang", officer_pw, "/console",
                         stack.totp_secrets["trang"])
        keep_dialogs(officer, dialogs)
        expect(officer).to_have_url(f"{web_url}/console")
        shot(officer, "console-board-before")
        assert_accessible(officer, "console-board-before")
        officer.get_by_role("link", name="+ Báo cáo mới / File a report").click()
        officer.get_by_label("Loại / Kind").fill("flood")
        officer.get_by_label("Mức độ / Severity").select_option("severe")
        officer.get_by_label("Khu vực / Area").select_option(AREA)
        officer.get_by_label("Tiêu đề / Title").fill(title)
        officer.get_by_label("Chi tiết / Details").fill("Nước ngập 30 cm, xe máy chết máy.")
        shot(officer, "console-report-form")
        assert_accessible(officer, "console-report-form")
        officer.get_by_role("button", name="Gửi / File report").click()
        expect(officer).to_have_url(re.compile(r"/console/incidents/INC-\d+$"))
        incident_id = officer.url.rsplit("/", 1)[1]
        expect(officer.locator("h2").first).to_contain_text(title)  # as text, not markup
        expect(officer.locator("#approval")).to_contain_text(f"APR-{incident_id[4:]}-1",
                                                             timeout=30_000)
        expect(officer.locator("#preview")).to_contain_text("SMS segment(s)")
        shot(officer, "console-incident")
        assert_accessible(officer, "console-incident")
        officer.get_by_role("link", name="Sự cố / Incidents").click()
        row = officer.locator(f"#row-{incident_id}")
        expect(row).to_contain_text("Lê Thị Thu Hà")
        expect(row.locator(".countdown")).to_have_text(re.compile(r"còn / left \d+:\d\d"))
        shot(officer, "console-board")
        assert_accessible(officer, "console-board")
        tip = officer.locator(f"#tip-{tip_id}")
        expect(tip).to_contain_text("nước đang lên nhanh")  # unverified, on the board
        tip.get_by_placeholder("INC-00001").fill(incident_id)
        tip.get_by_role("button", name="Gắn / Attach").click()
        expect(officer).to_have_url(f"{web_url}/console/incidents/{incident_id}")
        expect(officer.locator("#flash")).to_contain_text(f"{tip_id} attached to {incident_id}")
        expect(officer.locator("h2").first).to_contain_text(title)  # the title is unchanged
        officer.locator("#edit summary").click()  # the edit form, opened, is checked too
        expect(officer.get_by_label("Nội dung / Body web en")).to_be_visible()
        assert_accessible(officer, "console-incident-edit")

        approver = log_in(chromium, web_url, "thuha", approver_pw, "/inbox")
        expect(approver).to_have_url(f"{web_url}/inbox")
        approval_id = f"APR-{incident_id[4:]}-1"
        expect(approver.locator("#mine")).to_contain_text(approval_id)
        shot(approver, "inbox")
        assert_accessible(approver, "inbox")
        approver.get_by_role("link", name=approval_id).click()
        expect(approver.get_by_label("body web en")).to_be_visible()
        shot(approver, "inbox-request")
        assert_accessible(approver, "inbox-request")
        approver.locator("#approve").click()
        expect(approver.locator("#outcome")).to_contain_text(
            f"approved; statement STM-{incident_id[4:]}-1 goes out")
        shot(approver, "inbox-decided")
        assert_accessible(approver, "inbox-decided")

        statement = public.locator(f"#STM-{incident_id[4:]}-1")
        expect(statement).to_be_visible(timeout=30_000)
        expect(statement).to_contain_text("<script>alert('x')</script>")
        assert public.evaluate("window.__loaded_once") is True  # no reload happened
        shot(public, "public-live")
        assert_accessible(public, "public-live")

        statement_id = f"STM-{incident_id[4:]}-1"
        public.goto(f"{web_url}/statements/{statement_id}?lang=en")
        expect(public.locator(f"#{statement_id}")).to_be_visible()
        shot(public, "statement")
        assert_accessible(public, "statement")

        public.goto(f"{web_url}/press?q=lang ha")
        expect(public.locator(f"#press-{incident_id}")).to_be_visible()
        shot(public, "press")
        assert_accessible(public, "press")
        for page in (public, officer, approver):
            page.context.close()
    assert dialogs == []  # the <script> in the title never ran


def test_a_resident_subscribes_confirms_and_leaves_on_accessible_pages(
        subscribe_stack: Stack, mail: tuple[int, Inbox], page: Page) -> None:
    """Every page of the subscribe flow, as a resident meets it: the form, the form with its
    errors, the code page (a wrong code, then the right one), the email's confirm page, and
    leaving; each one passes axe-core."""
    web_url = subscribe_stack.web_url
    phone, email = new_phone(), new_email()
    page.goto(f"{web_url}/subscribe?lang=en")
    assert_accessible(page, "subscribe-form")
    page.get_by_role("button", name="Subscribe", exact=True).click()
    expect(page.locator("#errors")).to_be_visible()
    shot(page, "subscribe-errors")
    assert_accessible(page, "subscribe-errors")

    page.get_by_label("Phone (SMS)").fill(phone)
    page.get_by_label("Email").fill(email)
    page.locator("select[name=areas]").select_option("hn-hoan-kiem")
    page.get_by_role("button", name="Subscribe", exact=True).click()
    expect(page).to_have_url(re.compile(r"/subscribe/verify"))
    expect(page.locator("#email-sent")).to_contain_text(email)
    assert_accessible(page, "subscribe-verify")
    code = sms_code(subscribe_stack, phone)
    page.get_by_label("Code").fill("000000" if code != "000000" else "111111")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#error-code")).to_contain_text("Wrong code")
    assert_accessible(page, "subscribe-verify-wrong")
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#outcome")).to_contain_text("You will receive official updates")
    shot(page, "subscribe-confirmed")
    assert_accessible(page, "subscribe-confirmed")

    page.goto(link_in(mail_to(mail[1], email), "/subscribe/confirm/"))
    expect(page.get_by_text(email)).to_be_visible()
    assert_accessible(page, "subscribe-confirm-email")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#outcome")).to_contain_text("You will receive official updates")

    page.goto(f"{web_url}/subscribe/leave?lang=en")
    assert_accessible(page, "subscribe-leave")
    page.get_by_label("Phone or email").fill(phone)
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(re.compile(r"/subscribe/leave/verify"))
    shot(page, "subscribe-leave-verify")
    assert_accessible(page, "subscribe-leave-verify")


def test_the_language_switch_lists_every_language_and_each_page_follows_it(
        subscribe_stack: Stack, page: Page) -> None:
    """From the public page in French, the switch leads to Thai: the page says it is Thai
    (`lang`), its links keep the language, the subscribe form is in Thai with the reader's
    language chosen; each passes axe-core."""
    web_url = subscribe_stack.web_url
    page.goto(f"{web_url}/?lang=fr")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("heading", name="Communiqués officiels")).to_be_visible()
    switch = page.locator("header nav a[hreflang]")
    expect(switch).to_have_text(["Tiếng Việt", "English", "Français", "ไทย"])
    assert_drawn(page, "main h2")
    page.get_by_role("link", name="ไทย", exact=True).click()
    expect(page.locator("html")).to_have_attribute("lang", "th")
    assert_drawn(page, "main h2")  # Thai letters, not empty boxes
    assert_accessible(page, "public-thai")
    page.locator("header nav a[href^='/subscribe']").click()
    expect(page).to_have_url(re.compile(r"/subscribe\?lang=th"))
    expect(page.locator("select[name=language]")).to_have_value("th")
    shot(page, "subscribe-thai")
    assert_accessible(page, "subscribe-thai")
