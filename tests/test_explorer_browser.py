"""The explorer page in a real browser: headless Chromium driven by Selenium through sampling,
interpolation, the map's hover text, a slider and bad input, with screenshots.

Needs the selenium package (``pip install 'textvae[browser]'``) and Chromium with its driver
(Debian: ``apt-get install chromium chromium-driver``); skipped, saying so, when either is missing.
Screenshots go to $TEXTVAE_SCREENSHOTS when set (else the test's temporary folder).
"""
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from textvae import TextVAE
from textvae.config import SampleConfig
from textvae.serve import Explorer, Limits, make_server

pytestmark = pytest.mark.integration

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _browser():
    """(browser binary, chromedriver) found on PATH, or a skip naming what to install."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("the browser test needs selenium: pip install 'textvae[browser]'")
    binary = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if not (binary and driver):
        pytest.skip("the browser test needs Chromium and chromedriver on PATH "
                    "(Debian: apt-get install chromium chromium-driver)")
    return binary, driver


class Delayed(Explorer):
    """The explorer, with decode answers for chosen first coordinates (``slow``: z_0 -> seconds) held back
    after the model's work, as a busy server thread may hold one: answers then arrive out of order."""

    slow: dict = {}

    def decode(self, params):
        answer = super().decode(params)
        time.sleep(self.slow.get(params["z"][0], 0))
        return answer


@pytest.fixture(scope="module")
def page(tiny_run):
    binary, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    model = TextVAE.from_pretrained(tiny_run)
    httpd = make_server(Delayed(model, "valid", Limits(map_points=25), name="tiny"), "127.0.0.1", 0, quiet=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    host, port = httpd.server_address[:2]
    driver.get(f"http://{host}:{port}/")
    wait(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    yield driver, model
    driver.quit()
    httpd.shutdown()
    httpd.server_close()


def wait(driver, condition, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException

    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def shots() -> Path:
    folder = Path(os.environ.get("TEXTVAE_SCREENSHOTS") or shots.default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(autouse=True)
def _screenshot_folder(tmp_path):
    shots.default = tmp_path


def texts(driver, selector):
    """The text of every element matching ``selector``, read at one instant (the page replaces lists whole)."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);",
                                 selector)


def fill(driver, element_id, value):
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, element_id)
    box.clear()
    if len(value) > 100:  # typing 10,000 keys one by one is slow; the page reads .value all the same
        driver.execute_script("arguments[0].value = arguments[1];", box, value)
    else:
        box.send_keys(value)


def click(driver, element_id):
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


def test_map_sample_interpolate_and_sliders_render(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver, model = page
    dots = driver.find_elements(By.CSS_SELECTOR, "circle.map-point")
    assert len(dots) == 25
    assert len(driver.find_elements(By.CSS_SELECTOR, "#legend span")) >= 2  # coloured by the corpus's topics
    ActionChains(driver).move_to_element(dots[3]).perform()
    on_top = driver.execute_script("const r = arguments[0].getBoundingClientRect();"  # dots may overlap
                                   "return document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);", dots[3])
    assert on_top.get_attribute("data-text") in driver.find_element(By.ID, "tooltip").text
    a, b = dots[0].get_attribute("data-text"), dots[1].get_attribute("data-text")  # the map is redrawn below
    assert "tense: " in driver.find_element(By.ID, "tooltip").text  # every known factor of the hovered sentence
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "colour-by")).select_by_visible_text("tense")
    wait(driver, lambda d: sorted(texts(d, "#legend span")) == ["● future", "● past", "● present"])

    fill(driver, "sample-n", "5")
    fill(driver, "sample-seed", "2")
    click(driver, "sample-go")
    wait(driver, lambda d: len(texts(d, "#sample-out li")) == 5)
    assert texts(driver, "#sample-out li") == model.sample(5, SampleConfig(max_len=40), seed=2)
    assert len(driver.find_elements(By.CSS_SELECTOR, "rect.sample-point")) == 5

    fill(driver, "interp-a", a)
    fill(driver, "interp-b", b)
    fill(driver, "interp-steps", "3")
    click(driver, "interp-go")
    wait(driver, lambda d: len(texts(d, "#interp-out li")) == 5)
    assert texts(driver, "#interp-out li") == model.interpolate(a, b, 3, SampleConfig(max_len=40, greedy=True))
    assert len(driver.find_elements(By.CSS_SELECTOR, "circle.path-point")) == 5
    assert driver.find_elements(By.ID, "path-line")

    before = driver.find_element(By.CSS_SELECTOR, "#slider-out b").text
    assert before == model.decode(torch.zeros(1, 4), SampleConfig(max_len=40, greedy=True))[0]  # the centre
    driver.execute_script("const s = document.getElementById('dim-0'); s.value = 3.5;"
                          "s.dispatchEvent(new Event('input'));")
    expected = model.decode(torch.tensor([[3.5, 0.0, 0.0, 0.0]]), SampleConfig(max_len=40, greedy=True))[0]
    wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, "#slider-out b").text == expected)
    assert driver.find_elements(By.ID, "cursor")
    driver.save_screenshot(str(shots() / "explorer.png"))


def test_bad_input_shows_the_servers_message_and_the_page_keeps_working(page):
    driver, _ = page
    fill(driver, "interp-a", "the cat .")
    fill(driver, "interp-b", "a dog .")
    fill(driver, "interp-steps", "-2")
    click(driver, "interp-go")
    wait(driver, lambda d: "steps must be between 1 and 50, got -2" in d.find_element("id", "interp-error").text)
    fill(driver, "rec-sentence", "")
    click(driver, "rec-go")
    wait(driver, lambda d: "sentence is empty" in d.find_element("id", "rec-error").text)
    fill(driver, "rec-sentence", "a " * 5000)
    click(driver, "rec-go")
    wait(driver, lambda d: "10,000 characters long; the limit is 1,000" in d.find_element("id", "rec-error").text)
    driver.save_screenshot(str(shots() / "explorer-errors.png"))
    fill(driver, "sample-n", "3")
    click(driver, "sample-go")
    wait(driver, lambda d: len(texts(d, "#sample-out li")) == 3)
    assert driver.find_element("id", "sample-error").text == ""


def test_an_older_answer_arriving_late_does_not_replace_a_newer_one(page):
    """Two slider moves: the first one's decoding comes back after the second's. The page showed whichever
    answer came last, so it ended on the first position's sentence with the slider at the second."""
    from selenium.webdriver.common.by import By

    driver, model = page
    greedy = SampleConfig(max_len=40, greedy=True)
    decoded = {v: model.decode(torch.tensor([[v, 0.0, 0.0, 0.0]]), greedy)[0] for v in (-4.0, -2.0, 2.0, 4.0, 0.0)}
    pairs = [(a, b) for a in decoded for b in decoded if decoded[a] != decoded[b] and decoded[b] != decoded[0.0]]
    if not pairs:
        pytest.skip("the tiny model decodes these codes alike")
    first, second = pairs[0]
    shown = lambda d: d.find_element(By.CSS_SELECTOR, "#slider-out b").text  # noqa: E731
    click(driver, "slider-zero")
    wait(driver, lambda d: shown(d) == decoded[0.0])
    move = "const s = document.getElementById('dim-0'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));"
    Delayed.slow[first] = 3.0
    try:
        driver.execute_script(move, first)
        time.sleep(0.5)  # past the page's 60 ms pause: the first request is out
        driver.execute_script(move, second)
        wait(driver, lambda d: shown(d) == decoded[second])
        time.sleep(3.5)  # the first answer has come back by now
        assert shown(driver) == decoded[second] and driver.find_element(By.ID, "slider-error").text == ""
    finally:
        Delayed.slow.clear()


def test_a_map_of_many_points_is_drawn(page):
    """draw() took the map's extent with Math.min(...xs): V8 refuses to spread that many arguments, so a
    map of 150,000 points (--map-points on a large split) was never drawn."""
    from selenium.webdriver.common.by import By

    driver, _ = page
    error = driver.execute_script("""
        const saved = mapPoints;
        mapPoints = Array.from({length: 150000}, (_, i) => ({x: i % 1000, y: Math.floor(i / 1000), text: "s" + i}));
        try { draw(); return null; } catch (e) { return String(e); }
        finally { window.drawn = document.querySelectorAll("circle.map-point").length; mapPoints = saved; draw(); }
    """)
    assert error is None and driver.execute_script("return window.drawn") == 150000
    assert len(driver.find_elements(By.CSS_SELECTOR, "circle.map-point")) == 25
