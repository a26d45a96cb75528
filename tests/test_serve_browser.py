"""The web editor in a real browser: Debian's Chromium driven by selenium (both from the system,
nothing downloaded: SE_OFFLINE, explicit binary and driver paths) against `d2c-fast serve
builtin` on a loopback port. It uploads a face, moves a slider, waits for the shown image to
change, and checks its pixels equal the API's answer for the same settings. The screenshot is
kept as build/test-artifacts/serve.png."""
from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time

import httpx
import numpy as np
import pytest

from serve_helpers import ROOT, Server, face_png, pixels

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "build" / "test-artifacts"


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"Chromium not installed ({', '.join(missing)} missing): "
                    "apt-get install -y chromium chromium-driver (CI's .ci/run does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as ChromeService
    except ImportError:
        pytest.skip("selenium not installed: pip install -e '.[test]'")
    os.environ["SE_OFFLINE"] = "true"          # never let selenium-manager download anything
    profile = tempfile.mkdtemp(prefix="d2c-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,900",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=opts)
    return driver, profile


READ_AFTER = """
const done = arguments[arguments.length - 1];
const img = document.getElementById('after');
fetch(img.src).then(r => r.arrayBuffer()).then(b => {
  let s = ''; const u = new Uint8Array(b);
  for (let i = 0; i < u.length; i++) s += String.fromCharCode(u[i]);
  done({png: btoa(s), seq: img.dataset.seq, params: img.dataset.params || null,
        status: document.getElementById('status').textContent});
}).catch(e => done({error: String(e)}));
"""


def _edit_calls(url) -> int:
    m = httpx.get(url + "/metrics").text
    return sum(int(l.rsplit(" ", 1)[1]) for l in m.splitlines()
               if l.startswith('d2c_serve_requests_total{endpoint="/v1/edit"'))


def _wait(fn, timeout=60.0, what="condition"):
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_page_edits_live_and_matches_the_api(tmp_path):
    driver, profile = _browser_or_skip()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    srv = Server("builtin")
    try:
        face = tmp_path / "my_face.png"
        face.write_bytes(face_png(5))
        driver.set_script_timeout(30)
        driver.get(srv.url + "/")
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#faces img")) == 8,
              what="built-in faces")
        _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#sliders input"), what="sliders")
        names = [e.get_attribute("data-attr")
                 for e in driver.find_elements(By.CSS_SELECTOR, "#sliders input")]
        model = httpx.get(srv.url + "/v1/model").json()
        assert names == [n for n in model["attributes"] if model["attribute_info"][n]["fitted"]]

        def shown():
            return driver.execute_async_script(READ_AFTER)

        def settled(prev_seq=None):
            def ok():
                s = shown()
                if "error" in s or s["params"] is None or s["status"]:
                    return None
                return s if prev_seq is None or int(s["seq"]) > prev_seq else None
            return ok

        driver.find_element(By.ID, "upload").send_keys(str(face))
        first = _wait(settled(), what="the uploaded face's first edit")
        assert json.loads(first["params"])["strength"] == [0]

        slider = driver.find_element(By.ID, "slider-smiling")
        width = slider.size["width"]
        ActionChains(driver).move_to_element_with_offset(slider, width // 2 - 4, 0).click() \
            .perform()                          # near the right end: a large positive strength
        after = _wait(settled(int(first["seq"])), what="the edit after moving the slider")
        params = json.loads(after["params"])
        assert params["attr"] == ["smiling"] and params["strength"][0] > 1
        assert after["png"] != first["png"]     # the shown image changed

        fields = {"attr": params["attr"], "strength": [str(v) for v in params["strength"]],
                  "seed": str(params["seed"]), "method": params["method"],
                  "mode": params["mode"], "resize": "true"}
        r = httpx.post(srv.url + "/v1/edit", data=fields,
                       files={"image": ("my_face.png", face.read_bytes(), "image/png")},
                       timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_array_equal(pixels(base64.b64decode(after["png"])), pixels(r.content))
        assert not np.array_equal(pixels(base64.b64decode(first["png"])), pixels(r.content))

        # many quick moves (keyboard: one 0.1 step each): no pile-up, the latest one wins
        calls = _edit_calls(srv.url)
        for _ in range(15):
            slider.send_keys(Keys.ARROW_LEFT)
        want = float(slider.get_attribute("value"))
        last = _wait(lambda: (lambda s: s if s and json.loads(s["params"])["strength"][0]
                              == want else None)(settled()()), what="the last slider value")
        assert json.loads(last["params"])["strength"] == [want]
        stats = driver.execute_script("return window.d2cEditor")
        assert stats["maxInFlight"] == 1 and stats["inFlight"] == 0     # never two at once
        assert 1 <= _edit_calls(srv.url) - calls <= 15

        driver.find_element(By.ID, "sample").click()
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#samples img")) == 8,
              what="8 samples")
        href = driver.find_element(By.ID, "download").get_attribute("href")
        assert href.startswith("blob:")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "serve.png"))
        assert (ARTIFACTS / "serve.png").stat().st_size > 10_000
    finally:
        driver.quit()
        srv.stop()
        shutil.rmtree(profile, ignore_errors=True)
