"""Staff side: the lane monitor's counters, overrides recorded with the staff id (from the
status page, from the physical button), the PIN-protected HTTP API, and the page itself in a
real headless Chromium against a running lane."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from qrframes import make_frame
from test_lane import RELAY, Harness
from waiting import wait_until

from scanner import signals
from scanner.frontends import start_frontends
from scanner.monitor import LaneMonitor
from scanner.staff import LOCKOUT_AFTER, StaffServer

PIN = "246810"


# -- monitor -------------------------------------------------------------------------------

def test_monitor_counts_the_day_and_keeps_pending_reviews() -> None:
    day = [datetime(2026, 11, 28, 23, 59)]
    m = LaneMonitor("C1", "highway_exit", local_now=lambda: day[0])
    m.on_passage({"seq": 1, "record_id": "a", "verdict": "PASS", "reasons": ("OK",)})
    m.on_passage({"seq": 2, "record_id": "b", "verdict": "DENY", "reasons": ("HEALTH_RED", "FEVER")})
    m.on_passage({"seq": 3, "record_id": "c", "verdict": "REVIEW", "reasons": ("UNKNOWN_SIGNER",)})
    s = m.snapshot()
    assert s["counts"] == {"passed": 1, "denied": 1, "red_codes": 1, "fevers": 1, "reviews": 1, "overrides": 0}
    assert [r["seq"] for r in s["recent"]] == [3, 2, 1]
    assert m.pending("c")["record_id"] == "c" and m.pending("b") is None  # only REVIEWs are pending
    m.on_passage({"seq": 4, "record_id": "d", "verdict": "PASS", "reasons": ("STAFF_OVERRIDE",),
                  "override_by": "S1", "override_of": "c"})
    assert m.pending("c") is None and m.snapshot()["counts"]["overrides"] == 1
    day[0] += timedelta(minutes=2)  # midnight: a new day's counters
    assert m.snapshot()["counts"]["passed"] == 0


def test_monitor_never_holds_personal_fields() -> None:
    m = LaneMonitor()
    m.on_passage({"seq": 1, "record_id": "a", "verdict": "PASS", "reasons": ("OK",), "masked_name": "陈*聪",
                  "id_tail": "123X", "payload": "ZHC1:..."})
    dump = json.dumps(m.snapshot(), ensure_ascii=False)
    assert "陈" not in dump and "123X" not in dump and "ZHC1" not in dump


# -- override through the lane -------------------------------------------------------------

def review_lane(tmp_path: Path, trust: Any, codes: Any) -> Harness:
    return Harness(tmp_path, trust, [make_frame(codes.hc("green"))], skin_c=None, window=1.0)


def test_override_pass_records_staff_and_opens_the_gate(tmp_path: Path, trust: Any, codes: Any) -> None:
    with review_lane(tmp_path, trust, codes) as h:
        assert h.lane.request_override("PASS", "S042", "0" * 32)["ok"] is False  # nothing pending yet
        assert wait_until(lambda: len(h.rows) == 1)
        orig = h.rows[0]
        assert orig["verdict"] == "REVIEW"
        res = h.lane.request_override("PASS", "  S042 ", orig["record_id"])
        assert res["ok"], res
        rows = h.store.rows()
        assert len(rows) == 2
        o = rows[1]
        assert o["verdict"] == "PASS" and o["override_by"] == "S042" and o["override_verdict"] == "PASS"
        assert o["override_of"] == orig["record_id"] and o["reasons"][0] == "STAFF_OVERRIDE"
        assert "TEMP_UNAVAILABLE" in o["reasons"] and o["token_hash"] == orig["token_hash"]
        assert h.lane._pattern.name == "PASS"
        assert wait_until(lambda: h.history(RELAY).count(True) == 1)
        assert h.lane.request_override("DENY", "S042", orig["record_id"])["ok"] is False  # already handled
        assert h.lane.monitor.snapshot()["counts"]["overrides"] == 1


def test_override_validates_input(tmp_path: Path, trust: Any, codes: Any) -> None:
    with review_lane(tmp_path, trust, codes) as h:
        assert wait_until(lambda: len(h.rows) == 1)
        rid = h.rows[0]["record_id"]
        assert "staff id" in h.lane.request_override("PASS", "  ", rid)["message"]
        assert h.lane.request_override("MAYBE", "S1", rid)["ok"] is False
        assert h.lane.request_override("PASS", "S1", None)["ok"] is False  # the REVIEW must be named
        res = h.lane.request_override("DENY", "S7", rid)
        assert res["ok"] and h.store.rows()[-1]["verdict"] == "DENY"
        assert h.lane._pattern is signals.DENY


def test_long_press_on_the_button_passes_the_pending_review(tmp_path: Path, trust: Any, codes: Any) -> None:
    from dataclasses import replace

    with review_lane(tmp_path, trust, codes) as h:
        h.lane.cfg = cfg = replace(h.cfg, indicators=replace(h.cfg.indicators, override_button_pin=5,
                                                              override_hold_s=0.5))
        closers = start_frontends(cfg, h.lane, pin_factory=h.factory)
        try:
            assert wait_until(lambda: len(h.rows) == 1)
            btn = h.factory.pin(5)
            btn.drive_low()  # pressed (pull-up, to GND)
            time.sleep(0.1)
            btn.drive_high()  # a knock: nothing happens
            time.sleep(0.8)
            assert len(h.store.rows()) == 1
            btn.drive_low()
            assert wait_until(lambda: len(h.store.rows()) == 2, timeout_s=5)
            btn.drive_high()
            assert h.store.rows()[1]["override_by"] == "button"
        finally:
            for c in reversed(closers):
                c()


# -- HTTP -----------------------------------------------------------------------------------

def call(url: str, data: dict[str, Any] | None = None, cookie: str | None = None,
         csrf: str | None = None) -> tuple[int, Any, Any]:
    headers = {"Content-Type": "application/json", **({"Cookie": cookie} if cookie else {}),
               **({"X-CSRF-Token": csrf} if csrf else {})}
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def test_api_needs_the_pin_locks_out_guessing_and_overrides(tmp_path: Path, trust: Any, codes: Any) -> None:
    with review_lane(tmp_path, trust, codes) as h:
        srv = StaffServer(h.lane, PIN, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{srv.port}"
        try:
            assert call(base + "/api/state")[0] == 401
            assert call(base + "/api/override", {"verdict": "PASS", "staff_id": "x"})[0] == 401
            assert call(base + "/api/login", {"pin": "000000"})[0] == 401
            status, body, headers = call(base + "/api/login", {"pin": PIN})
            assert status == 200 and body["ok"] and body["csrf"]
            cookie = headers["Set-Cookie"].split(";")[0]
            assert "HttpOnly" in headers["Set-Cookie"] and "Secure" not in headers["Set-Cookie"]  # plain HTTP
            assert wait_until(lambda: len(h.rows) == 1)
            status, state, _ = call(base + "/api/state", cookie=cookie)
            assert status == 200 and state["counts"]["reviews"] == 1 and state["csrf"] == body["csrf"]
            pending = state["pending_reviews"][0]
            assert pending["reasons"] == ["TEMP_UNAVAILABLE"]
            order = {"verdict": "PASS", "staff_id": "S9", "record_id": pending["record_id"]}
            assert call(base + "/api/override", order, cookie)[0] == 403  # no CSRF token
            status, res, _ = call(base + "/api/override", order, cookie, body["csrf"])
            assert status == 200 and res["ok"]
            assert h.store.rows()[-1]["override_by"] == "S9"
            # guessing: after LOCKOUT_AFTER wrong PINs even the right one is refused for a while
            for _ in range(LOCKOUT_AFTER):
                call(base + "/api/login", {"pin": "111111"})
            status, body, headers = call(base + "/api/login", {"pin": PIN})
            assert status == 429 and "wait" in body["message"] and int(headers["Retry-After"]) >= 1
        finally:
            srv.stop()


# -- the page in a real browser ------------------------------------------------------------

def chromium() -> Any:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromedriver not installed (apt: chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


@pytest.mark.slow
def test_status_page_in_headless_chromium(tmp_path: Path, trust: Any, codes: Any) -> None:
    from selenium.webdriver.common.by import By

    driver = chromium()
    try:
        with review_lane(tmp_path, trust, codes) as h:
            srv = StaffServer(h.lane, PIN, "127.0.0.1", 0).start()
            try:
                driver.get(f"http://127.0.0.1:{srv.port}/")
                assert driver.find_element(By.ID, "dash").get_attribute("hidden") is not None
                driver.find_element(By.ID, "pin").send_keys(PIN)
                driver.find_element(By.ID, "loginbtn").click()
                # the page updates by itself after the passage (REVIEW, no temperature)
                assert wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#recent tr.row-REVIEW"))
                assert driver.find_element(By.CSS_SELECTOR, "[data-count=reviews]").text == "1"
                driver.find_element(By.ID, "staff").send_keys("S100")
                driver.find_element(By.CSS_SELECTOR, ".pending button.pass").click()
                assert wait_until(lambda: "已记录" in driver.find_element(By.ID, "msg").text)
                assert wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#recent tr.row-PASS"))
                assert driver.find_element(By.CSS_SELECTOR, "[data-count=overrides]").text == "1"
                rows = h.store.rows()
                assert rows[-1]["override_by"] == "S100" and rows[-1]["verdict"] == "PASS"
                driver.save_screenshot(str(tmp_path / "staff.png"))
            finally:
                srv.stop()
    finally:
        driver.quit()


@pytest.mark.slow
def test_status_page_against_the_running_daemon(tmp_path: Path, codes: Any) -> None:
    """The real `checkpoint-scanner run` process (simulated devices, staff page on): Chromium
    logs in, sees a REVIEW arrive by itself, overrides it, and the outbox holds the override."""
    import socket
    import sqlite3
    import subprocess
    import sys

    import cv2
    from qrframes import blank_frame, make_frame
    from selenium.webdriver.common.by import By

    root = Path(__file__).resolve().parents[1]
    sim = tmp_path / "sim"
    frames = sim / "frames"
    frames.mkdir(parents=True)
    # a code from a signer this lane's (bootstrapped) trust list does not know: REVIEW UNKNOWN_SIGNER
    for i in range(10):
        cv2.imwrite(str(frames / f"{i:03d}.png"), make_frame(codes.hc("green")) if i >= 5 else blank_frame())
    (frames / ".generated").write_text("test frames")
    (tmp_path / "pin").write_text(PIN + "\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = (root / "config" / "simulated.toml").read_text().replace("../var/sim", str(sim))
    text = text.replace("person_every_s = 6.0", "person_every_s = 2.5")
    cfg = tmp_path / "lane.toml"
    cfg.write_text(text + f'\n[staff]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\n'
                          f'pin_file = "{tmp_path / "pin"}"\n')
    daemon = subprocess.Popen([sys.executable, "-m", "scanner.cli", "run", "--config", str(cfg)], cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    driver = chromium()
    try:
        url = f"http://127.0.0.1:{port}/"

        def page_up() -> bool:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                return True
            except OSError:
                return False

        assert wait_until(page_up, timeout_s=30), daemon.stderr.read1().decode() if daemon.stderr else ""
        driver.get(url)
        driver.find_element(By.ID, "pin").send_keys(PIN)
        driver.find_element(By.ID, "loginbtn").click()
        assert wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, ".pending button.pass"), timeout_s=30)
        title, text = driver.execute_script(  # in one step: the page re-renders when a REVIEW comes or goes
            "const e = document.querySelector('.pending .reason'); return [e.title, e.innerText]")
        assert title == "UNKNOWN_SIGNER"  # the code only as a tooltip
        assert text.startswith("签发机构未知") and "unknown signer" in text
        driver.find_element(By.ID, "staff").send_keys("S200")
        driver.find_element(By.CSS_SELECTOR, ".pending button.pass").click()
        assert wait_until(lambda: "已记录" in driver.find_element(By.ID, "msg").text)
        assert wait_until(lambda: int(driver.find_element(By.CSS_SELECTOR, "[data-count=overrides]").text) >= 1)
    finally:
        driver.quit()
        daemon.terminate()
        assert daemon.wait(timeout=15) == 0
    with sqlite3.connect(sim / "outbox.db") as c:
        rows = c.execute("SELECT verdict, override_by, override_of, reasons FROM passages "
                         "WHERE override_by IS NOT NULL").fetchall()
    assert rows and rows[0][0] == "PASS" and rows[0][1] == "S200" and rows[0][2]
    assert "STAFF_OVERRIDE" in rows[0][3] and "UNKNOWN_SIGNER" in rows[0][3]
