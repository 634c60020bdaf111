"""`queue status|export` and `pull`: counts, exports a technician can carry away, a pull client
that resumes from its own cursor and acks only what is on its disk; background start-up."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from promtext import samples

from scanner import outbox
from scanner.api import Api
from scanner.cli import main
from scanner.config import ApiSection, parse_config
from scanner.errors import ScannerError
from scanner.models import PassageRecord
from scanner.store import Store, connect, new_record_id
from scanner.sync import start_background
from scanner.sync.background import Maintenance, read_token
from scanner.sync.pull import PullClient
from scanner.sync.uploader import SyncState

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "pull-token-0123456789abcdef"
# the smallest valid config: simulated devices
BASE = "[checkpoint]\nmode = \"simulated\"\n[simulation]\nbootstrap = true\n"


def rec() -> PassageRecord:
    return PassageRecord(record_id=new_record_id(), device_id="d1", checkpoint_id="c1",
                         checkpoint_kind="highway_exit", ts_utc="2026-11-28T10:00:00.000+00:00",
                         clock_trusted=True, boot_id="b", mono_s=1.0, verdict="REVIEW", reasons=("NO_CODE",))


def filled(tmp: Path, n: int) -> tuple[Store, Path]:
    db = tmp / "o.db"
    s = Store.open(db)
    for _ in range(n):
        s.record(rec())
    return s, db


def test_status_shows_counts_oldest_and_last_delivery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, db = filled(tmp_path, 12)
    c = connect(db)
    outbox.mark_delivered(c, 5, "push", [outbox.DeadLetter(3, s.rows(2, 1)[0]["record_id"], "bad")])
    c.close()
    assert main(["queue", "status", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "12 kept" in out and "7 pending 待交付" in out and "1 dead letters" in out
    assert "seq 6" in out and "via push" in out
    assert main(["queue", "status", "--db", str(db), "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["pending"] == 7 and st["delivered_upto"] == 5
    s.close()


def test_export_jsonl_csv_and_mark_delivered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s, db = filled(tmp_path, 30)
    c = connect(db)
    outbox.mark_delivered(c, 10, "push")
    c.close()
    out = tmp_path / "pending.jsonl"
    assert main(["queue", "export", "--db", str(db), "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["seq"] for r in lines] == list(range(11, 31)) and lines[0]["reasons"] == ["NO_CODE"]
    assert "exported 已导出 20" in capsys.readouterr().err
    csv_out = tmp_path / "all.csv"
    assert main(["queue", "export", "--db", str(db), "--what", "all", "--format", "csv", "--out", str(csv_out)]) == 0
    rows = list(csv.DictReader(csv_out.open(encoding="utf-8")))
    assert len(rows) == 30 and json.loads(rows[0]["reasons"]) == ["NO_CODE"]
    assert main(["queue", "export", "--db", str(db), "--out", str(out), "--mark-delivered", "--force"]) == 0
    c = connect(db)
    assert outbox.delivered_upto(c) == 30 and outbox.status(c, db)["last_delivery_via"] == "export"
    c.close()
    assert main(["queue", "export", "--db", str(db), "--mark-delivered"]) == 1  # stdout cannot be fsynced
    assert "needs --out" in capsys.readouterr().err
    s.close()


def test_status_on_a_missing_outbox_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["queue", "status", "--db", str(tmp_path / "none.db")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no outbox" in err and "fix:" in err


class Device:
    def __init__(self, tmp: Path, n: int) -> None:
        self.store, self.db = filled(tmp, n)
        self.stop = threading.Event()
        self.api = Api(replace(ApiSection(), bind="127.0.0.1", port=0, max_limit=7, rate_per_s=1000.0, burst=1000),
                       str(self.db), TOKEN)
        host, port = self.api.bind()
        self.threads = self.api.serve(self.stop)
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)
        self.store.close()


def test_pull_resumes_from_its_cursor_and_acks_only_what_is_synced(tmp_path: Path) -> None:
    dev = Device(tmp_path, 20)
    out = tmp_path / "central" / "gate.jsonl"
    acks: list[tuple[str, int, int]] = []
    try:
        client = PullClient(dev.url, TOKEN, out, progress=lambda s: None)
        real_ack = client.ack

        def checked_ack(cursor: str) -> None:
            saved = json.loads(client.cursor_file.read_text())
            n_lines = len(out.read_text().splitlines())
            acks.append((cursor, saved["bytes"], n_lines))
            assert saved["cursor"] == cursor and out.stat().st_size == saved["bytes"]  # on disk before ack
            real_ack(cursor)

        client.ack = checked_ack  # type: ignore[method-assign]
        assert client.run() == 20
        assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == list(range(1, 21))
        assert [a[2] for a in acks] == [7, 14, 20]
        c = connect(dev.db)
        assert outbox.delivered_upto(c) == 20
        c.close()
        for _ in range(5):
            dev.store.record(rec())
        with open(out, "ab") as f:  # a crash after writing a page, before its cursor was saved
            f.write(b'{"seq": 999, "torn": tr')
        again = PullClient(dev.url, TOKEN, out, progress=lambda s: None)
        assert again.run() == 5
        seqs = [json.loads(x)["seq"] for x in out.read_text().splitlines()]
        assert seqs == list(range(1, 26))  # exactly once in the file
    finally:
        dev.close()


def test_pull_cli_with_a_wrong_token_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = Device(tmp_path, 2)
    tok = tmp_path / "t"
    tok.write_text("wrong-token-0123456789abcdef\n")
    os.chmod(tok, 0o600)
    try:
        code = main(["pull", dev.url, "--token-file", str(tok), "--out", str(tmp_path / "o.jsonl")])
    finally:
        dev.close()
    err = capsys.readouterr().err
    assert code == 1 and "refused the token" in err and "Traceback" not in err


def test_token_files(tmp_path: Path) -> None:
    with pytest.raises(ScannerError, match="is not set"):
        read_token("$CREDENTIALS_DIRECTORY/api-token", "[api] token_file")
    with pytest.raises(ScannerError, match="cannot read"):
        read_token(str(tmp_path / "none"), "[api] token_file")
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ScannerError, match="no usable token"):
        read_token(str(tmp_path / "short"), "[api] token_file")


def test_config_expands_credentials_directory_and_refuses_api_without_token(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/checkpoint-scanner.service")
    cfg = parse_config(BASE + '[api]\nenabled = true\ntoken_file = "$CREDENTIALS_DIRECTORY/api-token"\n',
                       str(tmp_path / "c.toml"))
    assert cfg.api.token_file == "/run/credentials/checkpoint-scanner.service/api-token"
    from scanner.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        parse_config(BASE + "[api]\nenabled = true\n[upload]\nenabled = true\n", str(tmp_path / "c.toml"))
    text = " ".join(e.value.problems)
    assert "api.token_file" in text and "upload.url" in text and "upload.token_file" in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_background_serves_and_stops(tmp_path: Path) -> None:
    s, db = filled(tmp_path, 3)
    tok = tmp_path / "api-token"
    tok.write_text(TOKEN)
    port = free_port()
    cfg = parse_config(BASE + f'[api]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\ntoken_file = "{tok}"\n'
                       f'[store]\npath = "{db}"\nmaintenance_interval_s = 1\n', str(tmp_path / "c.toml"))
    stop = threading.Event()
    threads = start_background(cfg, str(db), stop)
    try:
        r = requests.get(f"http://127.0.0.1:{port}/api/v1/records", headers={"Authorization": f"Bearer {TOKEN}"},
                         timeout=5)
        assert r.status_code == 200 and len(r.json()["records"]) == 3
        m = requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        info = [k for k in samples(m.text) if k.startswith("checkpoint_info{")]  # the config's ids
        assert len(info) == 1 and f'checkpoint_id="{cfg.checkpoint.id}"' in info[0]
        assert f'device_id="{cfg.checkpoint.device_id}"' in info[0]
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    assert not any(t.is_alive() for t in threads)
    s.close()


def test_maintenance_prunes_checkpoints_and_raises_the_disk_alarm(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    s, db = filled(tmp_path, 200)
    c = connect(db)
    outbox.mark_delivered(c, 150, "push")
    c.close()
    st = SyncState()
    m = Maintenance(str(db), threading.Event(), st, interval_s=1, retention_s=0, max_bytes=64 * 4096)
    m.round()  # prunes the 150 delivered
    assert s.count() == 50
    m.round()  # nothing written since: idle, so the WAL is checkpointed and truncated
    assert outbox.file_bytes(db)[1] == 0
    assert st.disk_alarm is (outbox.used_ratio(connect(db), 64 * 4096) >= 0.8)
    s.close()


def test_daemon_uploads_and_serves_the_api(tmp_path: Path) -> None:
    """The real `run` command with [upload] and [api] on: passages reach the server, the API answers."""
    sys.path.insert(0, str(Path(__file__).parent))
    from records_server import TOKEN as UP_TOKEN
    from records_server import RecordsServer

    (tmp_path / "up").write_text(UP_TOKEN)
    (tmp_path / "api").write_text(TOKEN)
    port = free_port()
    text = (ROOT / "config" / "simulated.toml").read_text().replace("../var/sim", str(tmp_path / "sim"))
    with RecordsServer() as srv:
        text += (f'\n[upload]\nenabled = true\nurl = "{srv.url}"\ntoken_file = "{tmp_path / "up"}"\n'
                 f'max_age_s = 0.2\npoll_s = 0.1\n'
                 f'[api]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\ntoken_file = "{tmp_path / "api"}"\n')
        text = text.replace("person_every_s = ", "person_every_s = 1.0 #")
        cfg = tmp_path / "lane.toml"
        cfg.write_text(text)
        p = subprocess.Popen([sys.executable, "-m", "scanner.cli", "run", "--config", str(cfg)],
                             cwd=ROOT, stderr=subprocess.PIPE, text=True)
        health = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code
                if srv.stored:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        p.send_signal(signal.SIGTERM)  # stop as soon as both were seen
        try:
            _, err = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            raise
    assert p.returncode == 0, err[-2000:]
    assert health == 200
    assert srv.stored, err[-2000:]
    ids = {r["record_id"] for r in srv.stored.values()}
    c = connect(tmp_path / "sim" / "outbox.db")
    delivered = {r[0] for r in c.execute("SELECT record_id FROM passages WHERE seq <= ?", (outbox.delivered_upto(c),))}
    everything = {r[0] for r in c.execute("SELECT record_id FROM passages")}
    c.close()
    assert delivered and delivered <= ids <= everything  # nothing marked delivered that the server lacks
    assert "Traceback" not in err
