"""The staff status page as a guard sees it, in a real headless Chromium (Debian's chromium and
chromedriver, driven by selenium): local times, reasons in Chinese and English, verdict colours
with words, OK/stale cues on the device health, only the PIN box before login, and no sideways
scrolling on a 390 px phone. The lane is a LaneMonitor with known passages (no camera, no
outbox); the server is the real StaffServer."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_staff import PIN, chromium
from waiting import wait_until

from scanner.monitor import LaneMonitor
from scanner.staff import StaffServer

pytestmark = pytest.mark.slow

ZONE = "Asia/Shanghai"  # the browser's zone for these tests (UTC+8, no summer time)
NOW = datetime.now(UTC).replace(microsecond=123000)
CJK = re.compile(r"[\u3400-\u9fff]")
HEALTHY = {"queue_depth": 0, "last_delivery": NOW.timestamp() - 30, "clock_trusted": True, "trust_age_h": 2.5,
           "sensor": "ok"}


def zh_first(text: str) -> bool:
    """The first word has Chinese in it ("PIN错误 / wrong PIN", "绿码 green")."""
    return bool(text.split() and CJK.search(text.split()[0]))


def ts(minutes_ago: float) -> str:
    """A record's ts_utc as the lane writes it (ISO 8601, milliseconds, UTC)."""
    return (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds")


PASSAGES: list[dict[str, Any]] = [
    {"seq": 1, "record_id": "r1", "ts_utc": ts(9), "verdict": "PASS", "reasons": ["OK"], "temperature_c": 36.4,
     "credential_type": "health", "colour": "green"},
    {"seq": 2, "record_id": "r2", "ts_utc": ts(8), "verdict": "DENY", "reasons": ["HEALTH_RED"],
     "temperature_c": 36.6, "credential_type": "health", "colour": "red"},
    {"seq": 3, "record_id": "r3", "ts_utc": ts(7), "verdict": "DENY", "reasons": ["FEVER"], "temperature_c": 37.9,
     "credential_type": "health", "colour": "green"},
    {"seq": 4, "record_id": "r4", "ts_utc": ts(6), "verdict": "REVIEW", "reasons": ["TEMP_UNAVAILABLE"],
     "temperature_c": None, "credential_type": "health", "colour": "green"},
    {"seq": 5, "record_id": "r5", "ts_utc": ts(5), "verdict": "PASS", "reasons": ["STAFF_OVERRIDE", "TEMP_UNAVAILABLE"],
     "temperature_c": None, "credential_type": "health", "colour": "green", "override_by": "S042",
     "override_of": "r4"},
    {"seq": 6, "record_id": "r6", "ts_utc": ts(4), "verdict": "DENY", "reasons": ["RESIDENCE_OTHER_VILLAGE"],
     "temperature_c": 36.5, "credential_type": "residence", "colour": None},
    {"seq": 7, "record_id": "r7", "ts_utc": ts(3), "verdict": "REVIEW", "reasons": ["ONLINE_UNAVAILABLE"],
     "temperature_c": 36.7, "credential_type": "health", "colour": None},
    {"seq": 8, "record_id": "r8", "ts_utc": ts(2), "verdict": "REVIEW", "reasons": ["UNKNOWN_SIGNER"],
     "temperature_c": 36.3, "credential_type": "health", "colour": "green"},
]


class FakeLane:
    """What StaffServer needs of a lane: `.monitor` and `.request_override`."""

    def __init__(self) -> None:
        self.mono = [100.0]
        self.monitor = LaneMonitor("C7", "village_gate", monotonic=lambda: self.mono[0])
        for i in range(30):  # a camera at 10 frames per second
            self.mono[0] = 100.0 + i / 10
            self.monitor.frame(None)
        for p in PASSAGES:
            self.monitor.on_passage(p)
        self.overrides: list[tuple[str, str, str]] = []

    def request_override(self, verdict: str, staff_id: str, record_id: str) -> dict[str, Any]:
        orig = self.monitor.pending(record_id)
        if orig is None:
            return {"ok": False, "message": "没有该待核验通行（已处理或已过期） / no such REVIEW"}
        self.overrides.append((verdict, staff_id, record_id))
        self.monitor.on_passage({**orig, "seq": 100 + len(self.overrides), "record_id": f"o{len(self.overrides)}",
                                 "ts_utc": ts(0), "verdict": verdict, "override_by": staff_id,
                                 "override_of": record_id, "reasons": ["STAFF_OVERRIDE", *orig["reasons"]]})
        return {"ok": True, "message": f"{verdict} 已记录 / recorded"}


@dataclass
class Page:
    driver: Any  # selenium Chrome, its time zone Asia/Shanghai
    url: str
    health: dict[str, Any]  # what the server reports as extra health: change it and the page follows
    lane: FakeLane
    server: StaffServer


@pytest.fixture
def page() -> Iterator[Page]:
    lane = FakeLane()
    health = dict(HEALTHY)
    srv = StaffServer(lane, PIN, "127.0.0.1", 0, extra_health=lambda: dict(health)).start()
    driver = chromium()
    try:
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
        yield Page(driver, f"http://127.0.0.1:{srv.port}/", health, lane, srv)
    finally:
        driver.quit()
        srv.stop()


def viewport(driver: Any, width: int, height: int) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700})


def log_in(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.ID, "pin").send_keys(PIN)
    driver.find_element(By.ID, "loginbtn").click()
    assert wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#recent tr")) == len(PASSAGES))


def rgb(driver: Any, element: Any, prop: str) -> tuple[int, ...]:
    value = driver.execute_script("return getComputedStyle(arguments[0])[arguments[1]]", element, prop)
    return tuple(int(v) for v in re.findall(r"\d+", value)[:3])


def text(driver: Any, css: str) -> str:
    """The element's rendered text, read in one step (the page re-renders what changed)."""
    return str(driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
                                     css))


def cue(driver: Any, key: str) -> str:
    return text(driver, f"#health tr[data-health={key}] .cue")


def cue_colour(driver: Any, key: str) -> tuple[int, ...]:
    value = driver.execute_script("return getComputedStyle(document.querySelector(arguments[0])).color",
                                  f"#health tr[data-health={key}] .cue")
    return tuple(int(v) for v in re.findall(r"\d+", value)[:3])


def test_login_page_shows_only_the_pin_box(page: Page) -> None:
    from selenium.webdriver.common.by import By

    driver, url = page.driver, page.url
    viewport(driver, 390, 844)
    driver.get(url)
    assert driver.find_element(By.ID, "pin").is_displayed()
    shown = [e.get_attribute("id") or e.tag_name for e in driver.find_elements(By.CSS_SELECTOR, "#dash, #dash *")
             if e.is_displayed()]
    assert shown == []
    assert driver.execute_script("return document.getElementById('dash').getBoundingClientRect().height") == 0
    driver.find_element(By.ID, "pin").send_keys("000000")
    driver.find_element(By.ID, "loginbtn").click()
    assert wait_until(lambda: driver.find_element(By.ID, "loginmsg").text)
    msg = driver.find_element(By.ID, "loginmsg").text
    assert zh_first(msg) and msg.index("PIN错误") < msg.index("wrong PIN")  # the server says it English first
    assert not driver.find_element(By.ID, "dash").is_displayed()


def test_times_are_local_hh_mm_ss_in_the_browser_zone(page: Page) -> None:
    from selenium.webdriver.common.by import By

    driver, url = page.driver, page.url
    log_in(driver, url)
    assert driver.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone") == ZONE
    cell = driver.find_element(By.CSS_SELECTOR, "#recent tr[data-record=r3] td.t-time")
    utc = datetime.fromisoformat(PASSAGES[2]["ts_utc"])
    local = utc.astimezone(ZoneInfo(ZONE)).strftime("%H:%M:%S")
    assert re.fullmatch(r"(\d\d-\d\d )?\d\d:\d\d:\d\d", cell.text), cell.text  # no milliseconds, no "T", no zone
    assert cell.text.endswith(local) and utc.strftime("%H:%M:%S") not in cell.text  # UTC+8, not UTC
    assert "UTC" in cell.find_element(By.CSS_SELECTOR, ".time").get_attribute("title")  # the raw value on hover
    # the header clock is in the same zone and format
    clock = driver.find_element(By.ID, "clock").text
    assert re.fullmatch(r"\d\d:\d\d:\d\d", clock), clock
    h, m, s = map(int, clock.split(":"))
    now = datetime.now(ZoneInfo(ZONE))
    off = abs(h * 3600 + m * 60 + s - (now.hour * 3600 + now.minute * 60 + now.second))
    assert min(off, 86400 - off) <= 60


def test_reasons_show_chinese_then_english_with_the_code_as_tooltip(page: Page) -> None:
    from selenium.webdriver.common.by import By

    driver, url = page.driver, page.url
    log_in(driver, url)
    reason = driver.find_element(By.CSS_SELECTOR, "#recent tr[data-record=r2] .reason")
    assert reason.text.startswith("健康码红码") and "health code is red" in reason.text
    assert "HEALTH_RED" not in reason.text and reason.get_attribute("title") == "HEALTH_RED"
    pending = driver.find_element(By.CSS_SELECTOR, ".pending[data-record=r8]")
    assert "签发机构未知" in pending.text and "unknown signer" in pending.text and "UNKNOWN_SIGNER" not in pending.text
    # Chinese first everywhere a guard reads a label
    labels = driver.find_elements(By.CSS_SELECTOR, "h3, th, button, label, .verdict, .cue, .colour, #state, #title")
    texts = [e.text.strip() for e in labels if e.is_displayed() and e.text.strip()]
    assert texts and [t for t in texts if not zh_first(t)] == []


def test_rows_carry_the_verdict_colour_and_a_word(page: Page) -> None:
    from selenium.webdriver.common.by import By

    driver, url = page.driver, page.url
    log_in(driver, url)
    for rid, verdict, word in (("r1", "PASS", "通行 PASS"), ("r2", "DENY", "拦截 DENY"),
                               ("r7", "REVIEW", "核验 REVIEW")):
        row = driver.find_element(By.CSS_SELECTOR, f"#recent tr[data-record={rid}]")
        assert row.get_attribute("class") == f"row-{verdict}"
        assert row.find_element(By.CSS_SELECTOR, ".verdict").text == word
        r, g, b = rgb(driver, row, "backgroundColor")
        assert {"PASS": g > r and g > b, "DENY": r > g and r > b, "REVIEW": r > g > b}[verdict], (verdict, r, g, b)
    override = driver.find_element(By.CSS_SELECTOR, "#recent tr[data-record=r5]")
    assert "S042" in override.text and "工作人员放行/拦截" in override.text


def test_health_cues_say_ok_and_stale_in_words_and_colour(page: Page) -> None:
    driver, url, health = page.driver, page.url, page.health
    log_in(driver, url)
    for key in ("camera", "picture", "sensor", "queue", "clock", "trust"):
        assert cue(driver, key) == "正常 OK", key
    r, g, b = cue_colour(driver, "clock")
    assert g > r and g > b
    health.update(clock_trusted=False, trust_age_h=500.0, queue_stale_s=30, sensor="down")
    assert wait_until(lambda: cue(driver, "clock") == "过期 stale")
    r, g, b = cue_colour(driver, "clock")
    assert r > g and r > b
    assert "未同步" in text(driver, "#health tr[data-health=clock]")
    assert cue(driver, "trust") == "过期 stale" and cue(driver, "queue") == "过期 stale"
    assert "30 秒未更新" in text(driver, "#health tr[data-health=queue]")
    assert cue(driver, "sensor") == "故障 fault"
    health.update(trust_age_h=None)  # never received: stale, not OK
    assert wait_until(lambda: "未收到" in text(driver, "#health tr[data-health=trust]"))
    assert cue(driver, "trust") == "过期 stale"
    health.clear()  # nothing reported: unknown, never OK
    assert wait_until(lambda: cue(driver, "clock") == "未知 unknown")
    assert cue(driver, "trust") == "未知 unknown" and cue(driver, "sensor") == "未知 unknown"


def test_pending_review_shows_the_code_colour_beside_the_buttons(page: Page) -> None:
    from selenium.webdriver.common.by import By

    driver, url, lane = page.driver, page.url, page.lane
    log_in(driver, url)
    act = driver.find_element(By.CSS_SELECTOR, ".pending[data-record=r8] .act")
    colour = act.find_element(By.CSS_SELECTOR, ".colour")
    assert colour.get_attribute("data-colour") == "green" and colour.text == "绿码 green"
    assert [b.text for b in act.find_elements(By.TAG_NAME, "button")] == ["放行 PASS", "拦截 DENY"]
    nocolour = driver.find_element(By.CSS_SELECTOR, ".pending[data-record=r7] .act .colour")
    assert nocolour.text == "无颜色 no colour"
    act.find_element(By.CSS_SELECTOR, "button.deny").click()  # no staff id yet: asked for it
    assert wait_until(lambda: driver.find_element(By.ID, "msg").text.startswith("请填写工号"))
    driver.find_element(By.ID, "staff").send_keys("S100")
    driver.find_element(By.CSS_SELECTOR, ".pending[data-record=r8] button.deny").click()  # with the CSRF header
    assert wait_until(lambda: "已记录" in driver.find_element(By.ID, "msg").text)
    assert lane.overrides == [("DENY", "S100", "r8")]
    assert wait_until(lambda: not driver.find_elements(By.CSS_SELECTOR, ".pending[data-record=r8]"))


def test_a_lost_connection_is_shown_not_hidden(page: Page) -> None:
    driver = page.driver
    log_in(driver, page.url)
    assert wait_until(lambda: text(driver, "#live") == "实时 live")
    page.server.stop()
    assert wait_until(lambda: text(driver, "#live").startswith("连接中断 offline"), timeout_s=20)
    assert driver.execute_script("return document.body.classList.contains('offline')")


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_no_sideways_scroll_and_screenshots(page: Page, tmp_path: Path, width: int, height: int) -> None:
    driver, url, health = page.driver, page.url, page.health
    health.update(clock_trusted=False)  # a cue of each kind on the screenshot
    viewport(driver, width, height)
    log_in(driver, url)
    assert wait_until(lambda: cue(driver, "clock") == "过期 stale")
    assert driver.execute_script("return window.innerWidth") == width
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= width, f"{scroll} px wide in a {width} px window"
    driver.save_screenshot(str(tmp_path / f"staff-{width}.png"))
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    full = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}})
    (tmp_path / f"staff-{width}-full.png").write_bytes(base64.b64decode(full["data"]))
    # the worst a day brings: long unbroken words in a fault, a staff id and a store error
    page.lane.monitor.set_faults(["camera: /dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_ABCDEF12-video-index0 gone"])
    page.lane.monitor.on_passage({**PASSAGES[6], "seq": 9, "record_id": "r9", "override_by": "S" * 32,
                                  "override_of": "r7", "verdict": "DENY"})
    health.update(store_error="database disk image is malformed: /var/lib/checkpoint-scanner/outbox.db-wal")
    assert wait_until(lambda: "S" * 32 in text(driver, "#recent") and "outbox.db-wal" in text(driver, "#health"))
    scroll = driver.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= width, f"{scroll} px wide in a {width} px window with long words"
    driver.save_screenshot(str(tmp_path / f"staff-{width}-long.png"))
