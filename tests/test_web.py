"""The web page end to end in headless Chromium (Debian's chromium + chromium-driver, installed by
.ci/run): a question gets a streamed answer; a drawing request on a text-only model shows the
server's error. A screenshot is saved to test-artifacts/web.png."""

import shutil
import time
from pathlib import Path

import pytest

import omnidlm
from omnidlm.data.synthetic import heldout, score_exact
from omnidlm.sequence.tokenizer import Tokenizer
from omnidlm.serve.app import create_app
from omnidlm.serve.testing import start_server

ROOT = Path(__file__).parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [pytest.mark.chromium,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")]


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=900,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the page")


def test_page_streams_an_answer_and_shows_errors(browser):
    from selenium.webdriver.common.by import By

    model = omnidlm.load(ROOT / "models" / "text-tiny")
    server, url = start_server(create_app(model, Tokenizer.from_file(ROOT / "models" / "text-tiny"), "text-tiny"))
    try:
        browser.get(url + "/")
        messages, answer = heldout(1)[0]
        browser.find_element(By.ID, "prompt").send_keys(messages[0]["content"])
        browser.find_element(By.ID, "send").click()
        done = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".answer[data-done='1']"))
        text = done[0].text.removeprefix("model: ")
        assert score_exact(text, answer), text
        assert len(done[0].find_elements(By.CSS_SELECTOR, ".block")) >= 2  # streamed block by block
        browser.find_element(By.ID, "prompt").send_keys("/draw a handwritten digit 3")
        browser.find_element(By.ID, "send").click()
        wait_for(lambda: "no image generator" in browser.find_element(By.ID, "log").text)
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        browser.save_screenshot(str(ROOT / "test-artifacts" / "web.png"))
    finally:
        server.should_exit = True


def test_page_asks_about_an_uploaded_image_and_shows_a_drawing(browser, tmp_path):
    from selenium.webdriver.common.by import By

    from omnidlm.data.digits import WORDS, digit_images
    from omnidlm.serve.images import encode_png
    from omnidlm import systems

    loaded = systems.open(ROOT / "models" / "lladao-digits")
    model, tokenizer = loaded.model, loaded.tokenizer
    server, url = start_server(create_app(model, tokenizer, "lladao-digits"))
    try:
        image = tmp_path / "digit.png"
        import base64

        image.write_bytes(base64.b64decode(encode_png(digit_images("heldout", size=32)[0][0])))
        browser.get(url + "/")
        browser.find_element(By.ID, "image").send_keys(str(image))
        browser.find_element(By.ID, "prompt").send_keys("What digit is shown?")
        browser.find_element(By.ID, "send").click()
        done = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".answer[data-done='1']"))
        assert done[0].text.removeprefix("model: ").strip() in WORDS
        browser.find_element(By.ID, "prompt").send_keys("/draw a handwritten digit 3")
        browser.find_element(By.ID, "send").click()
        drawing = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "img.drawing"))
        assert drawing[0].get_attribute("src").startswith("data:image/png;base64,")
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        browser.save_screenshot(str(ROOT / "test-artifacts" / "web-omni.png"))
    finally:
        server.should_exit = True
