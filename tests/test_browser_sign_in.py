"""Sign-in in a real browser, on the secured front (auth on, PostgreSQL): the
page asks for credentials, refuses wrong ones in words, then chats with the
session cookie; signing out brings the form back."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import chromium

ANSWER_TIMEOUT = 120


def visible(driver, element_id: str) -> bool:
    return driver.find_element(By.ID, element_id).is_displayed()


def sign_in(driver, username: str, password: str) -> None:
    for field, value in (("username-input", username), ("password-input", password)):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "sign-in-button").click()


def test_sign_in_then_chat_then_sign_out(secured, tmp_path):
    password, _ = secured.new_user("carmen")
    with chromium(log_dir=tmp_path) as driver:
        driver.get(secured.url)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: visible(d, "sign-in-form"))
        assert not visible(driver, "chat")

        sign_in(driver, "carmen", "not-the-password")
        wait.until(lambda d: visible(d, "sign-in-error"))
        assert "incorrectos" in driver.find_element(By.ID, "sign-in-error").text

        sign_in(driver, "carmen", password)
        wait.until(lambda d: visible(d, "chat"))
        assert not visible(driver, "sign-in-form")
        assert driver.find_element(By.ID, "account-name").text == "carmen"
        # The session cookie is invisible to scripts.
        assert "chatbot_session" not in driver.execute_script("return document.cookie")

        driver.find_element(By.ID, "message-input").send_keys("Hola")
        driver.find_element(By.ID, "send-button").click()
        WebDriverWait(driver, ANSWER_TIMEOUT).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant .text")
            and d.find_element(By.CSS_SELECTOR, ".message.assistant .text").text.strip()
            and d.find_element(By.CSS_SELECTOR, ".message.assistant").get_attribute("aria-busy") == "false")
        assert not driver.find_elements(By.CSS_SELECTOR, ".message.assistant .error")
        # The chat became a conversation of this user, listed in the sidebar.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#conversation-list .conversation-open"))
        assert driver.find_element(By.CSS_SELECTOR, "#conversation-list .conversation-open").text.startswith("Hola")

        driver.find_element(By.ID, "sign-out-button").click()
        wait.until(lambda d: visible(d, "sign-in-form"))
        driver.refresh()  # the cookie is gone server-side too: a reload asks again
        wait.until(lambda d: visible(d, "sign-in-form"))
