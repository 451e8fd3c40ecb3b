"""The page in a real browser: headless Chromium through nginx, against the
whole stack (gateway, ASR, the embedded text model).

What only a browser proves: the app's modules and its vendored libraries load
under nginx's CSP, Enter sends and Shift+Enter does not, streamed text shows up
in a conversation of the sidebar that survives a reload (rename, delete),
markdown is rendered while hostile HTML stays inert, the image button says why
it is off for the text-only model, images are downscaled in the browser, Stop
cuts a stream (stored as incomplete), a network drop keeps the draft and Retry
sends it, the English switch, and MediaRecorder → (WebSocket or upload) →
Whisper → text box with a (fake) microphone over HTTPS, by tap and by holding
the space bar. Every wait is on a condition of the page, with a timeout sized
for a slow 2-core CPU; nothing sleeps and then hopes. The model answers few
times on purpose: each answer costs seconds of a shared CPU.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.audio_clips import speak_wav, wav_to_samples
from tests.support.browser import chromium, missing_binaries

# The embedded model is slow on a 2-core CPU (24 tokens take up to ~30 s when
# the machine is busy); these are upper bounds, not expected durations.
ANSWER_TIMEOUT = 120
READY_TIMEOUT = 60
TRANSCRIBE_TIMEOUT = 120
SPOKEN = "Quiero saber el tiempo en Madrid"

# Chromium logs every failed fetch as a SEVERE console line. Tests that provoke
# one on purpose allow exactly that line; anything else SEVERE fails the test.
OFFLINE_FETCH = r"net::ERR_INTERNET_DISCONNECTED"


def plain(text: str) -> str:
    """Lowercase without accents, so assertions don't hinge on Whisper's spelling."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def spoken_wav(tmp_path_factory) -> Path:
    """espeak-ng saying SPOKEN (about 2 s), as a 16-bit PCM mono WAV for the fake microphone.

    Chromium plays the file in a loop from the moment the page opens the
    microphone. Half a second of silence before the sentence and four after it
    make the ~4 s recording hold the sentence exactly once: with a shorter tail
    the loop starts again mid-recording and Whisper base, given the sentence
    and a cut-off repeat, heard "en más edad" instead of "en Madrid".
    """
    samples, rate = wav_to_samples(speak_wav(SPOKEN, voice="es"))
    padded = np.concatenate([np.zeros(rate // 2, dtype=np.float32), samples, np.zeros(4 * rate, dtype=np.float32)])
    pcm = np.clip(padded * 32767.0, -32768, 32767).astype("<i2")
    path = tmp_path_factory.mktemp("audio") / "madrid.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def driver(stack, spoken_wav, tmp_path_factory) -> WebDriver:
    # `stack` first: the browser starts only once the services are up.
    if missing := missing_binaries():
        pytest.fail(f"not installed: {', '.join(missing)}; `make system-test` (as root) or "
                    "`sudo apt-get install -y chromium chromium-driver` installs them", pytrace=False)
    with chromium(spoken_wav, log_dir=tmp_path_factory.mktemp("chromedriver")) as browser:
        yield browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where each step's screenshot goes (BROWSER_SCREENSHOTS, else a pytest temp folder)."""
    folder = os.environ.get("BROWSER_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("screenshots")


class Console:
    """The browser console of one test: SEVERE lines fail it unless allowed."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver
        self.allowed: list[re.Pattern] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def severe(self) -> list[str]:
        entries = self.driver.get_log("browser")  # also empties the browser's buffer
        return [entry["message"] for entry in entries
                if entry["level"] == "SEVERE" and not any(p.search(entry["message"]) for p in self.allowed)]


@pytest.fixture(autouse=True)
def console(driver):
    driver.get_log("browser")  # start from an empty log
    watched = Console(driver)
    yield watched
    unexpected = watched.severe()
    assert not unexpected, f"unexpected SEVERE lines in the browser console: {unexpected}"


def wait(driver: WebDriver, timeout: float, poll: float = 0.1) -> WebDriverWait:
    return WebDriverWait(driver, timeout, poll_frequency=poll, ignored_exceptions=(StaleElementReferenceException,))


def open_page(driver: WebDriver, url: str) -> None:
    """A fresh page (a new conversation, empty draft) once /readyz says the services are up
    and the model list has arrived."""
    driver.get(url + "/")
    wait_loaded(driver)


def wait_loaded(driver: WebDriver) -> None:
    wait(driver, READY_TIMEOUT).until(lambda d: "ok" in by_id(d, "status").get_attribute("class").split(),
                                      "the page never showed its 'Servicios listos' status")
    wait(driver, READY_TIMEOUT).until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#model-select option')].some(o => o.value)"),
        "the model picker never got the model list")


def by_id(driver: WebDriver, element_id: str):
    return driver.find_element(By.ID, element_id)


def messages(driver: WebDriver, role: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, f"#messages .message.{role}")


def text_of(element) -> str:
    """textContent: the text as the page wrote it, whether or not it is rendered."""
    return element.get_attribute("textContent")


def part(message, css: str) -> str:
    found = message.find_elements(By.CSS_SELECTOR, css)
    return text_of(found[0]) if found else ""


def idle(driver: WebDriver) -> bool:
    """No chat request in flight: Stop is disabled again."""
    return not by_id(driver, "stop-button").is_enabled()


def wait_idle(driver: WebDriver, timeout: float = ANSWER_TIMEOUT) -> None:
    wait(driver, timeout).until(idle, "the chat request never finished")



def send_and_wait(driver: WebDriver, text: str) -> None:
    """Types `text`, sends it with Enter and waits for the complete answer."""
    count = len(messages(driver, "assistant"))
    box = by_id(driver, "message-input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)
    wait(driver, 10).until(lambda d: len(messages(d, "assistant")) == count + 1, "Enter did not send the message")
    wait_idle(driver)


def sidebar_titles(driver: WebDriver) -> list[str]:
    return [text_of(b) for b in driver.find_elements(By.CSS_SELECTOR, "#conversation-list .conversation-open")]


def current_conversation(driver: WebDriver) -> str | None:
    match = re.fullmatch(r"#c=([\w-]+)", driver.execute_script("return location.hash"))
    return match.group(1) if match else None


# ------------------------------------------------------------------ tests


def test_page_loads_through_nginx_with_spanish_labels(driver, nginx_url):
    open_page(driver, nginx_url)
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
    assert driver.title == "Chatbot multimodal"
    assert by_id(driver, "status").text == "Servicios listos"

    box = by_id(driver, "message-input")
    assert box.is_displayed() and box.is_enabled()
    assert "Escribe tu mensaje" in box.get_attribute("placeholder")
    assert by_id(driver, "image-button").text == "Adjuntar imagen"
    assert by_id(driver, "record-button").text == "Grabar voz"
    assert by_id(driver, "new-chat-button").text == "Nueva conversación"
    stop, send = by_id(driver, "stop-button"), by_id(driver, "send-button")
    assert stop.text == "Detener" and not stop.is_enabled()
    assert send.text == "Enviar" and not send.is_enabled()  # nothing typed yet
    assert by_id(driver, "empty-hint").is_displayed()
    assert not messages(driver, "user") and not messages(driver, "assistant")
    assert current_conversation(driver) is None  # a new conversation until the first send

    # The model picker lists the chat model (not the speech model) with its capabilities.
    options = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#model-select option")]
    assert options and all("smollm2" in o for o in options), options
    assert "solo texto" in by_id(driver, "model-info").text

    # The stylesheet came through nginx (the file input is hidden by its class)...
    assert driver.execute_script("return getComputedStyle(document.getElementById('image-input')).position") \
        == "absolute"
    # ...and so did the module script: it enables Send as soon as there is text.
    box.send_keys("Hola")
    assert send.is_enabled()


def test_enter_sends_and_the_streamed_answer_appears_while_shift_enter_adds_a_line(driver, nginx_url):
    open_page(driver, nginx_url)
    box = by_id(driver, "message-input")
    box.send_keys("Hola")
    ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
    box.send_keys("¿Cómo estás?")
    assert box.get_attribute("value") == "Hola\n¿Cómo estás?"
    assert not messages(driver, "user"), "Shift+Enter sent the message"

    box.send_keys(Keys.ENTER)
    wait(driver, 10).until(lambda d: messages(d, "user"), "Enter did not send the message")
    [user] = messages(driver, "user")
    assert part(user, ".text") == "Hola\n¿Cómo estás?"
    assert box.get_attribute("value") == ""
    assert messages(driver, "assistant")

    # Text first shows up while the answer streams; the request then ends (Stop disabled again).
    wait(driver, ANSWER_TIMEOUT).until(lambda d: part(messages(d, "assistant")[0], ".text").strip() or idle(d),
                                       "no assistant text appeared")
    wait_idle(driver)
    [reply] = messages(driver, "assistant")
    assert part(reply, ".text").strip(), f"no assistant text; error: {part(reply, '.error')!r}"
    assert not reply.find_elements(By.CSS_SELECTOR, ".error")
    info = part(reply, ".info")
    assert "smollm2" in info and "tokens" in info, info  # the stream's meta and done events arrived
    assert "streaming" not in reply.get_attribute("class").split()


def test_a_chat_becomes_a_conversation_that_survives_a_reload_and_can_be_renamed_and_deleted(driver, nginx_url,
                                                                                              shots):
    open_page(driver, nginx_url)
    send_and_wait(driver, "Hola, me llamo Lucía")
    [reply] = messages(driver, "assistant")
    answer = part(reply, ".text")
    assert answer.strip(), part(reply, ".error")

    # The conversation exists on the gateway, is open (URL hash) and is listed, marked current.
    conversation_id = current_conversation(driver)
    assert conversation_id, "the URL does not name the conversation"
    stored = httpx.get(f"{nginx_url}/api/conversations/{conversation_id}", timeout=10).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    wait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"[data-id='{conversation_id}']"),
                           "the conversation is not in the sidebar")
    item = driver.find_element(By.CSS_SELECTOR, f"[data-id='{conversation_id}'] .conversation-open")
    assert item.get_attribute("aria-current") == "page"
    assert text_of(item).startswith("Hola, me llamo")  # named after the first message

    # Copy and edit-last work without the model.
    reply.find_element(By.CSS_SELECTOR, ".copy-button").click()
    wait(driver, 5).until(lambda d: part(messages(d, "assistant")[0], ".copy-button") == "Copiado")
    assert messages(driver, "assistant")[0].find_elements(By.CSS_SELECTOR, ".regenerate-button")

    # A reload brings the same conversation back, with its messages.
    driver.refresh()
    wait_loaded(driver)
    wait(driver, 20).until(lambda d: len(messages(d, "assistant")) == 1, "the conversation was not restored")
    assert part(messages(driver, "user")[0], ".text") == "Hola, me llamo Lucía"
    assert part(messages(driver, "assistant")[0], ".text") == answer
    assert current_conversation(driver) == conversation_id
    driver.save_screenshot(str(shots / "conversation-after-reload.png"))

    # Edit and resend: the edited message and a new answer replace the old exchange, stored too.
    messages(driver, "user")[0].find_element(By.CSS_SELECTOR, ".edit-button").click()
    box = by_id(driver, "message-input")
    assert box.get_attribute("value") == "Hola, me llamo Lucía"
    box.clear()
    box.send_keys("Hola, me llamo Marta", Keys.ENTER)
    wait(driver, 10).until(lambda d: [part(m, ".text") for m in messages(d, "user")] == ["Hola, me llamo Marta"],
                           "the edited message did not replace the old one")
    wait_idle(driver)
    assert len(messages(driver, "assistant")) == 1
    stored = httpx.get(f"{nginx_url}/api/conversations/{conversation_id}", timeout=10).json()["messages"]
    assert [(m["role"], m["content"]) for m in stored][0] == ("user", "Hola, me llamo Marta") and len(stored) == 2

    # Rename: the pencil turns the title into a field; Enter saves it on the gateway.
    row = f"[data-id='{conversation_id}']"
    driver.find_element(By.CSS_SELECTOR, f"{row} .rename-button").click()
    field = wait(driver, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, f"{row} .rename-input"))
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("Presentaciones", Keys.ENTER)
    wait(driver, 10).until(lambda d: "Presentaciones" in sidebar_titles(d), "the new title is not shown")
    assert httpx.get(f"{nginx_url}/api/conversations/{conversation_id}", timeout=10).json()["title"] \
        == "Presentaciones"

    # Delete, after the confirmation: gone from the sidebar and the gateway; the page starts anew.
    driver.find_element(By.CSS_SELECTOR, f"{row} .delete-button").click()
    alert = wait(driver, 5).until(lambda d: d.switch_to.alert)
    assert "Presentaciones" in alert.text
    alert.accept()
    wait(driver, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, row), "still in the sidebar")
    assert httpx.get(f"{nginx_url}/api/conversations/{conversation_id}", timeout=10).status_code == 404
    assert not messages(driver, "user") and current_conversation(driver) is None


def test_markdown_is_rendered_and_hostile_html_in_answers_or_titles_stays_inert(driver, nginx_url, shots):
    payload = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    created = httpx.post(f"{nginx_url}/api/conversations", json={"title": f"Hostil {payload}"}, timeout=10)
    assert created.status_code == 201, created.text
    hostile_id = created.json()["id"]
    try:
        open_page(driver, nginx_url)
        row = wait(driver, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, f"[data-id='{hostile_id}']"))
        assert text_of(row.find_element(By.CSS_SELECTOR, ".conversation-open")) == f"Hostil {payload}"
        assert not row.find_elements(By.CSS_SELECTOR, "img, script")

        # The answer renderer (the one that streamed answers go through), fed a hostile answer.
        answer = ("**negrita** y `código`\n\n```python\ndef hola():\n    return 1\n```\n\n"
                  f"{payload}\n\n[pulsa](javascript:window.pwned=3)\n\n- uno\n- dos")
        rendered = driver.execute_async_script("""
            const [text, done] = arguments;
            import('/js/markdown.js').then(({ renderMarkdown }) => {
              const box = document.createElement('div');
              box.id = 'markdown-probe';
              document.body.append(box);
              renderMarkdown(box, text);
              done(box.outerHTML);
            }).catch((e) => done('import failed: ' + e));""", answer)
        assert not rendered.startswith("import failed"), rendered
        probe = by_id(driver, "markdown-probe")
        assert text_of(probe.find_element(By.TAG_NAME, "strong")) == "negrita"
        assert len(probe.find_elements(By.CSS_SELECTOR, "li")) == 2
        code = probe.find_element(By.CSS_SELECTOR, ".code-block pre code")
        assert "hljs" in code.get_attribute("class").split()
        assert code.find_elements(By.CSS_SELECTOR, ".hljs-keyword")  # highlighted: `def`, `return`
        assert probe.find_element(By.CSS_SELECTOR, ".code-block .copy-code").text == "Copiar"
        # The HTML shows as text; nothing of it became an element or ran.
        assert not probe.find_elements(By.CSS_SELECTOR, "img, script, [onerror]")
        assert "<img src=x" in text_of(probe)
        assert not probe.find_elements(By.CSS_SELECTOR, "a[href^='javascript']")
        assert driver.execute_script("return window.pwned") is None
        driver.execute_script("document.getElementById('messages').append(arguments[0])", probe)
        driver.save_screenshot(str(shots / "markdown.png"))

        probe.find_element(By.CSS_SELECTOR, ".copy-code").click()
        wait(driver, 5).until(lambda d: d.find_element(By.CSS_SELECTOR, "#markdown-probe .copy-code").text
                              == "Copiado")
    finally:
        httpx.delete(f"{nginx_url}/api/conversations/{hostile_id}", timeout=10)


def test_the_image_button_is_off_with_the_reason_for_the_text_only_model(driver, nginx_url, tiny_png, shots):
    open_page(driver, nginx_url)
    button = by_id(driver, "image-button")
    reason = by_id(driver, "image-reason")
    assert not button.is_enabled()
    assert reason.is_displayed() and "no admite imágenes" in reason.text and "smollm2" in reason.text
    assert button.get_attribute("aria-describedby") == "image-reason"

    # Pasting an image is refused up front, in words, and nothing is attached.
    pasted = driver.execute_script("""
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], 'dibujo.png', { type: 'image/png' }));
        const event = new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
        document.getElementById('message-input').dispatchEvent(event);
        return event.defaultPrevented;""", __import__("base64").b64encode(tiny_png).decode())
    assert pasted, "the page did not take the pasted image"
    wait(driver, 5).until(lambda d: by_id(d, "notice").is_displayed(), "no notice about the refused image")
    assert "no admite imágenes" in by_id(driver, "notice").text
    assert not by_id(driver, "image-preview-box").is_displayed()
    driver.save_screenshot(str(shots / "image-refused.png"))


def test_images_are_downscaled_and_bad_files_refused_in_words_in_the_browser(driver, nginx_url, tiny_png):
    open_page(driver, nginx_url)
    result = driver.execute_async_script("""
        const [small, done] = arguments;
        (async () => {
          const { prepareImage } = await import('/js/images.js');
          const canvas = Object.assign(document.createElement('canvas'), { width: 3000, height: 2000 });
          canvas.getContext('2d').fillRect(0, 0, 10, 10);
          const big = await new Promise((r) => canvas.toBlob(r, 'image/jpeg', 0.9));
          const out = await prepareImage(new File([big], 'foto.jpg', { type: 'image/jpeg' }));
          const size = await createImageBitmap(out);
          const bytes = Uint8Array.from(atob(small), (c) => c.charCodeAt(0));
          const png = new File([bytes], 'dibujo.png', { type: 'image/png' });
          const kept = await prepareImage(png);
          let refusal = '';
          try { await prepareImage(new File(['hola'], 'nota.txt', { type: 'text/plain' })); }
          catch (e) { refusal = e.message; }
          let broken = '';
          try { await prepareImage(new File(['no soy un png'], 'roto.png', { type: 'image/png' })); }
          catch (e) { broken = e.message; }
          return { width: size.width, height: size.height, type: out.type, keptSame: kept === png, refusal, broken };
        })().then(done, (e) => done({ error: String(e) }));""", __import__("base64").b64encode(tiny_png).decode())
    assert "error" not in result, result
    assert (result["width"], result["height"], result["type"]) == (1600, 1067, "image/jpeg"), result
    assert result["keptSame"], "a small PNG was re-encoded for nothing"
    assert "no admitido" in result["refusal"] and "text/plain" in result["refusal"], result
    assert "No se pudo leer la imagen" in result["broken"], result


def test_recording_from_the_microphone_over_https_puts_the_transcript_in_the_text_box(driver, https_url, shots):
    open_page(driver, https_url)
    assert driver.execute_script("return window.isSecureContext") is True
    # Every text the live transcript shows while recording (it is hidden again afterwards).
    driver.execute_script("""
        window.liveSeen = [];
        const live = document.getElementById('live-transcript');
        new MutationObserver(() => { if (live.textContent) window.liveSeen.push(live.textContent); })
          .observe(live, { childList: true, characterData: true, subtree: true });""")
    record = by_id(driver, "record-button")
    record.click()  # a tap: recording goes on until the next tap
    wait(driver, 20).until(lambda d: by_id(d, "record-button").text == "Parar grabación",
                           f"recording did not start; notice: {by_id(driver, 'notice').text!r}")
    assert record.get_attribute("aria-pressed") == "true"
    # The level meter moves while the fake microphone speaks.
    wait(driver, 20, poll=0.05).until(lambda d: d.execute_script(
        "const bar = document.querySelector('#level-meter > span');"
        "return bar.offsetParent !== null && parseFloat(bar.style.transform.slice(7)) > 0.1"),
        "the level meter never moved")
    # The page's own timer: four seconds of the looping clip (about 2 s of speech).
    wait(driver, 30, poll=0.2).until(lambda d: by_id(d, "record-timer").text >= "00:04", "the timer did not run")
    driver.save_screenshot(str(shots / "recording.png"))
    record.click()

    # Done transcribing: the button is back (it is disabled while the clip is transcribed).
    wait(driver, TRANSCRIBE_TIMEOUT).until(
        lambda d: by_id(d, "record-button").is_enabled() and by_id(d, "record-button").text == "Grabar voz"
        and by_id(d, "notice").text != "Transcribiendo…",
        "the recording was never transcribed")
    notice = by_id(driver, "notice")
    assert not notice.is_displayed(), f"the page showed a notice: {notice.text!r}"
    transcript = by_id(driver, "message-input").get_attribute("value")
    assert "madrid" in plain(transcript), transcript
    assert record.text == "Grabar voz" and record.is_enabled()
    # The streaming endpoint answered while the user spoke (not only the upload at the end).
    seen = driver.execute_script("return window.liveSeen")
    assert any("madrid" in plain(text) for text in seen), seen
    assert not messages(driver, "user"), "the transcript was sent without the user checking it"
    assert by_id(driver, "send-button").is_enabled()


def test_holding_the_space_bar_records_and_auto_send_sends_the_transcript(driver, https_url):
    open_page(driver, https_url)
    auto_send = by_id(driver, "auto-send")
    auto_send.click()
    assert auto_send.is_selected()
    try:
        driver.find_element(By.TAG_NAME, "body").click()  # focus out of the text box
        ActionChains(driver).key_down(Keys.SPACE).perform()
        wait(driver, 20).until(lambda d: by_id(d, "record-button").text == "Parar grabación",
                               f"holding space did not record; notice: {by_id(driver, 'notice').text!r}")
        wait(driver, 30, poll=0.2).until(lambda d: by_id(d, "record-timer").text >= "00:04", "the timer did not run")
        ActionChains(driver).key_up(Keys.SPACE).perform()  # releasing stops (push-to-talk)

        wait(driver, TRANSCRIBE_TIMEOUT).until(lambda d: messages(d, "user"), "the transcript was not sent")
        assert "madrid" in plain(part(messages(driver, "user")[0], ".text"))
        assert by_id(driver, "message-input").get_attribute("value") == ""
        wait_idle(driver)
        [reply] = messages(driver, "assistant")
        assert part(reply, ".text").strip(), part(reply, ".error")
    finally:
        driver.execute_script("localStorage.removeItem('chatbot.prefs')")  # auto-send off for the next tests


def test_stop_cuts_the_answer_short_and_the_next_message_still_gets_an_answer(driver, nginx_url, shots):
    open_page(driver, nginx_url)
    box = by_id(driver, "message-input")
    stop, send = by_id(driver, "stop-button"), by_id(driver, "send-button")
    box.send_keys("Escribe una historia muy larga sobre un dragón y un caballero.")
    box.send_keys(Keys.ENTER)
    wait(driver, 10).until(lambda d: by_id(d, "stop-button").is_enabled(), "the message was not sent")
    # Typed while the answer is on its way: Send stays disabled until the request is over.
    box.send_keys("Hola")
    assert not send.is_enabled()

    # Click Stop at the first streamed text (checked every 20 ms).
    first_text = ("const n = document.querySelector('#messages .message.assistant .text');"
                  "return Boolean(n && n.textContent.trim());")
    wait(driver, ANSWER_TIMEOUT, poll=0.02).until(lambda d: d.execute_script(first_text) or idle(d),
                                                  "no assistant text appeared")
    clicked = time.monotonic()
    stop.click()
    wait(driver, 10, poll=0.02).until(lambda d: by_id(d, "send-button").is_enabled(),
                                      "the page did not return to idle after Stop")
    to_idle = time.monotonic() - clicked

    [reply] = messages(driver, "assistant")
    info = part(reply, ".info")
    # "Detenido." and no token count: the stream was cut before its `done` event,
    # so the model had not finished when the page went idle.
    assert "Detenido." in info and "tokens" not in info, info
    assert not reply.find_elements(By.CSS_SELECTOR, ".error")
    stopped_text = part(reply, ".text")
    assert stopped_text.strip()
    assert "streaming" not in reply.get_attribute("class").split()
    assert not stop.is_enabled()
    assert to_idle < 5, f"Stop took {to_idle:.1f} s to return the page to idle"
    assert box.get_attribute("value") == "Hola"  # what was typed meanwhile is still there

    box.send_keys(Keys.ENTER)
    wait(driver, 10).until(lambda d: len(messages(d, "assistant")) == 2, "the next message was not sent")
    wait_idle(driver)
    second = messages(driver, "assistant")[1]
    assert part(second, ".text").strip(), part(second, ".error")
    assert not second.find_elements(By.CSS_SELECTOR, ".error")
    assert "tokens" in part(second, ".info")
    assert part(reply, ".info") == info  # the stopped answer stayed stopped

    # The gateway stored the stopped answer as incomplete: after a reload it says so.
    driver.refresh()
    wait_loaded(driver)
    wait(driver, 20).until(lambda d: len(messages(d, "assistant")) == 2, "the conversation was not restored")
    restored = messages(driver, "assistant")[0]
    assert "Respuesta incompleta." in part(restored, ".info")
    driver.save_screenshot(str(shots / "stopped-after-reload.png"))
    assert stopped_text.startswith(part(restored, ".text").strip()[:10])


def test_a_network_drop_keeps_the_draft_and_retry_sends_it(driver, nginx_url, console, shots):
    console.allow(OFFLINE_FETCH)  # the failed fetch is the point of this test
    open_page(driver, nginx_url)
    driver.execute_cdp_cmd("Network.enable", {})
    offline = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, **offline})
    try:
        box = by_id(driver, "message-input")
        box.send_keys("Dime hola")
        box.send_keys(Keys.ENTER)
        wait(driver, 10).until(lambda d: messages(d, "assistant") and idle(d), "the send did not fail")
        [reply] = messages(driver, "assistant")
        assert "No se pudo conectar" in part(reply, ".error")
        assert box.get_attribute("value") == "Dime hola"  # nothing typed is lost
        driver.save_screenshot(str(shots / "network-error.png"))
    finally:
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, **offline})

    # Back online, Retry sends the same turn again, in place of the failed one.
    box.clear()  # Retry does not need the composer's copy
    reply.find_element(By.CSS_SELECTOR, ".retry-button").click()
    wait(driver, 10).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#messages .error"),
                           "the failed turn is still shown")
    wait_idle(driver)
    assert [part(m, ".text") for m in messages(driver, "user")] == ["Dime hola"]
    [answer] = messages(driver, "assistant")
    assert part(answer, ".text").strip(), part(answer, ".error")


def test_the_english_switch_translates_the_page_and_is_remembered(driver, nginx_url, shots):
    open_page(driver, nginx_url)
    try:
        Select(by_id(driver, "ui-language")).select_by_value("en")
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
        assert by_id(driver, "send-button").text == "Send"
        assert "Type your message" in by_id(driver, "message-input").get_attribute("placeholder")
        assert by_id(driver, "status").text == "Services ready"
        driver.save_screenshot(str(shots / "english.png"))
        assert "does not take images" in by_id(driver, "image-reason").text
        assert driver.title == "Multimodal chatbot"

        driver.refresh()  # the choice is remembered
        wait_loaded(driver)
        assert by_id(driver, "record-button").text == "Record voice"
        assert by_id(driver, "new-chat-button").text == "New conversation"
        Select(by_id(driver, "ui-language")).select_by_value("es")
        assert by_id(driver, "send-button").text == "Enviar"
    finally:
        driver.execute_script("localStorage.removeItem('chatbot.uiLanguage')")


def test_the_theme_toggle_switches_and_remembers_dark_and_light(driver, nginx_url, shots):
    open_page(driver, nginx_url)
    html = driver.find_element(By.TAG_NAME, "html")
    first = html.get_attribute("data-theme")
    assert first in ("light", "dark")
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    try:
        by_id(driver, "theme-button").click()
        other = "dark" if first == "light" else "light"
        assert html.get_attribute("data-theme") == other
        assert driver.execute_script("return getComputedStyle(document.body).backgroundColor") != background
        driver.save_screenshot(str(shots / f"theme-{other}.png"))
        driver.refresh()
        wait_loaded(driver)
        assert driver.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == other
    finally:
        driver.execute_script("localStorage.removeItem('chatbot.prefs')")


def test_on_a_phone_the_sidebar_is_a_drawer_opened_by_the_menu_button(driver, nginx_url, shots):
    driver.set_window_size(390, 844)
    try:
        open_page(driver, nginx_url)
        sidebar, toggle = by_id(driver, "sidebar"), by_id(driver, "sidebar-toggle")
        assert toggle.is_displayed() and toggle.get_attribute("aria-expanded") == "false"
        assert not sidebar.is_displayed()
        assert by_id(driver, "message-input").is_displayed() and by_id(driver, "send-button").is_displayed()
        assert driver.execute_script("return document.documentElement.scrollWidth <= innerWidth"), \
            "the page is wider than the phone"
        driver.save_screenshot(str(shots / "phone.png"))
        toggle.click()
        wait(driver, 5).until(lambda d: by_id(d, "sidebar").is_displayed(), "the drawer did not open")
        assert toggle.get_attribute("aria-expanded") == "true"
        driver.save_screenshot(str(shots / "phone-drawer.png"))
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        wait(driver, 5).until(lambda d: not by_id(d, "sidebar").is_displayed(), "Escape did not close the drawer")
    finally:
        driver.set_window_size(1280, 900)
