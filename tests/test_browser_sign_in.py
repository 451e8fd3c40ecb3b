"""Sign-in in a real browser, on the secured front (auth on, PostgreSQL): the
page asks for credentials, refuses wrong ones in words, then chats with the
session cookie; signing out brings the form back."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.browser import chromium, screenshot_folder, snap

ANSWER_MS = 120_000
FORM_MS = 30_000


def sign_in(page: Page, username: str, password: str) -> None:
    for field, value in (("username-input", username), ("password-input", password)):
        box = page.locator(f"#{field}")
        box.fill("")
        box.press_sequentially(value)
    page.locator("#sign-in-button").click()


def test_sign_in_then_chat_then_sign_out(secured, tmp_path):
    password, _ = secured.new_user("carmen")
    shots = screenshot_folder(tmp_path)
    with chromium() as page:
        page.goto(secured.url)
        form, chat = page.locator("#sign-in-form"), page.locator("#chat")
        expect(form).to_be_visible(timeout=FORM_MS)
        expect(chat).to_be_hidden()
        snap(page, shots / "sign-in-form.png")

        sign_in(page, "carmen", "not-the-password")
        expect(page.locator("#sign-in-error")).to_be_visible(timeout=FORM_MS)
        expect(page.locator("#sign-in-error")).to_contain_text("incorrectos")

        sign_in(page, "carmen", password)
        expect(chat).to_be_visible(timeout=FORM_MS)
        expect(form).to_be_hidden()
        expect(page.locator("#account-name")).to_have_text("carmen")
        # The session cookie is invisible to scripts.
        assert "chatbot_session" not in page.evaluate("document.cookie")

        page.locator("#message-input").press_sequentially("Hola")
        page.locator("#send-button").click()
        reply = page.locator(".message.assistant")
        # An answer with text, no longer busy.
        expect(reply).to_have_count(1, timeout=10_000)
        expect(reply).to_have_attribute("aria-busy", "false", timeout=ANSWER_MS)
        assert reply.locator(".text").inner_text().strip()
        assert reply.locator(".error").count() == 0
        # The chat became a conversation of this user, listed in the sidebar.
        # It is listed at once as "Sin título"; its title comes with the list reloaded after
        # the turn ends, so wait for it rather than read it.
        titles = page.locator("#conversation-list .conversation-open")
        expect(titles.first).to_be_visible(timeout=FORM_MS)
        expect(titles.first, "the conversation was not named after the first message") \
            .to_have_text(re.compile(r"^Hola"), timeout=FORM_MS)
        snap(page, shots / "signed-in-chat.png")

        page.locator("#sign-out-button").click()
        expect(form).to_be_visible(timeout=FORM_MS)
        page.reload()  # the cookie is gone server-side too: a reload asks again
        expect(form).to_be_visible(timeout=FORM_MS)
