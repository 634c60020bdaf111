"""`checkpoint-scanner queue status|export` for a technician on site, and `pull` for the
central side. Thin: the work is in scanner/outbox.py and scanner/sync/pull.py."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from scanner.errors import ScannerError

DEFAULT_CONFIG = "/etc/checkpoint-scanner/config.toml"
EPILOG = """\
examples:
  checkpoint-scanner queue status                         counts, oldest pending, last delivery
  checkpoint-scanner queue status --db /media/usb/outbox.db --json
  checkpoint-scanner queue export --out /media/usb/pending.jsonl          undelivered records
  checkpoint-scanner queue export --what all --format csv --out all.csv
  checkpoint-scanner queue export --out /media/usb/p.jsonl --mark-delivered   then they may be pruned
  checkpoint-scanner queue export --what dead-letters --out dead.jsonl    what the server refused
  checkpoint-scanner pull https://10.8.0.12:8787 --token-file gate3.token --out gate3.jsonl
"""


def _db(args: argparse.Namespace) -> tuple[str, int]:
    if args.db:
        return args.db, 0
    from scanner.config import load_config

    cfg = load_config(args.config or DEFAULT_CONFIG)
    return cfg.store.path, cfg.store.max_size_mib << 20


def _when(ts: float | None) -> str:
    if not ts:
        return "never 从未"
    ago = max(0.0, time.time() - ts)
    return f"{datetime.fromtimestamp(ts, UTC).isoformat(timespec='seconds')} ({_ago(ago)} ago)"


def _ago(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def cmd_status(args: argparse.Namespace) -> int:
    from scanner import outbox
    from scanner.store import connect

    path, max_bytes = _db(args)
    conn = connect(path, readonly=True)
    try:
        st = outbox.status(conn, path, max_bytes)
    finally:
        conn.close()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    mib = 1 << 20
    print(f"outbox 出站队列:      {st['path']} (id {st['outbox_id']})")
    print(f"records 记录:         {st['records']} kept 保留, {st['pending']} pending 待交付, "
          f"{st['dead_letters']} dead letters 被拒")
    if st["oldest_pending_seq"] is not None:
        age = f" ({_ago(st['oldest_pending_age_s'])} ago)" if st["oldest_pending_age_s"] is not None else ""
        print(f"oldest pending 最早待交付: seq {st['oldest_pending_seq']}, {st['oldest_pending_ts']}{age}")
    else:
        print("oldest pending 最早待交付: none 无")
    via = f" via {st['last_delivery_via']}" if st["last_delivery_via"] else ""
    print(f"last delivery 最近交付:  {_when(st['last_delivery_at'])}{via}")
    cap = f", {st['used_ratio'] * 100:.0f}% of the {max_bytes / mib:.0f} MiB cap" if max_bytes else ""
    print(f"disk 磁盘:            {st['db_bytes'] / mib:.1f} MiB file + {st['wal_bytes'] / mib:.1f} MiB WAL{cap}")
    if st["recovered_from"]:
        print(f"ALARM 告警:           the outbox was damaged and moved aside to {st['recovered_from']} "
              f"({_when(st['recovered_at'])}); export it with --db")
    if st["fs_free_bytes"] is not None:
        ro = ", READ-ONLY 只读" if st["fs_readonly"] else ""
        print(f"card 存储卡:          {st['fs_free_bytes'] / mib:.0f} MiB free 可用{ro}")
    if st["disk_alarm"]:
        print("ALARM 告警:           outbox over 80% full (of the cap or of the card's free space); fix: free disk "
              "space (df -h), restore uploads, or export with --mark-delivered")
    return 0


def _rows(path: str, what: str) -> tuple[int, int, Any]:
    """-> (start seq, end seq, iterator of pages) with short read transactions per page."""
    from scanner import outbox
    from scanner.store import connect

    conn = connect(path, readonly=True)
    try:
        if what == "dead-letters":
            total = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            start, end = 0, total
        else:
            start = outbox.delivered_upto(conn) if what == "pending" else 0
            end = conn.execute("SELECT coalesce(max(seq), 0) FROM passages").fetchone()[0]
            total = conn.execute("SELECT count(*) FROM passages WHERE seq > ? AND seq <= ?", (start, end)).fetchone()[0]
    finally:
        conn.close()

    def pages() -> Any:
        after = start
        while True:
            c = connect(path, readonly=True)
            try:
                if what == "dead-letters":
                    cur = c.execute("SELECT seq, record_id, reason, at, record FROM dead_letters WHERE seq > ? "
                                    "ORDER BY seq LIMIT 1000", (after,))
                    page = [{"seq": r[0], "record_id": r[1], "reason": r[2], "at": r[3], "record": json.loads(r[4])}
                            for r in cur.fetchall()]
                else:
                    page = [r for r in outbox.rows_after(c, after, 1000)[0] if r["seq"] <= end]
            finally:
                c.close()
            if not page:
                return
            yield page
            after = page[-1]["seq"]

    return total, end, pages()


def cmd_export(args: argparse.Namespace) -> int:
    from scanner import outbox
    from scanner.store import connect

    if args.mark_delivered and (not args.out or args.what == "dead-letters"):
        raise ScannerError("--mark-delivered needs --out FILE and --what pending or all; fix: write to a file "
                           "(it is fsynced before anything is marked)")
    path, _ = _db(args)
    total, _, pages = _rows(path, args.what)
    out: Any = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout
    done, last_seq, t_last = 0, 0, time.monotonic()
    writer: csv.DictWriter[str] | None = None
    try:
        for page in pages:
            for r in page:
                if args.format == "csv":
                    flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                            for k, v in r.items()}
                    if writer is None:
                        writer = csv.DictWriter(out, fieldnames=list(flat), extrasaction="ignore")
                        writer.writeheader()
                    writer.writerow(flat)
                else:
                    out.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
            done += len(page)
            last_seq = page[-1]["seq"]
            if time.monotonic() - t_last >= 1.0:
                t_last = time.monotonic()
                print(f"exported 已导出 {done}/{total} ({done * 100 // max(total, 1)}%)", file=sys.stderr)
        if args.out:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if args.out:
            out.close()
    print(f"exported 已导出 {done} record(s){' to ' + args.out if args.out else ''}", file=sys.stderr)
    if args.mark_delivered and last_seq:
        conn = connect(path)
        try:
            mark = outbox.mark_delivered(conn, last_seq, "export")
        finally:
            conn.close()
        print(f"marked delivered 已标记交付 up to seq {mark}; they are pruned after [store] retention_days",
              file=sys.stderr)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from scanner.sync.background import read_token
    from scanner.sync.pull import PullClient

    token = read_token(args.token_file, "--token-file")
    client = PullClient(args.url, token, args.out, args.cursor_file, limit=args.limit, ca_bundle=args.ca_file)
    n = client.run(follow_s=args.follow)
    print(f"pulled 已拉取 {n} record(s) into {args.out}", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    q = sub.add_parser("queue", help="outbox status and export (technician on site)",
                       description="Look into the outbox without stopping the daemon (read-only unless "
                       "--mark-delivered).", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    qs = q.add_subparsers(dest="queue_command", metavar="ACTION", required=True)

    def where(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument("--config", help=f"daemon config (default {DEFAULT_CONFIG}); its [store] path is used")
        g.add_argument("--db", help="an outbox file instead, e.g. one moved aside as corrupt-*/outbox.db")

    st = qs.add_parser("status", help="counts, oldest pending record, last delivery, disk use")
    where(st)
    st.add_argument("--json", action="store_true", help="machine-readable")
    st.set_defaults(func=cmd_status)

    ex = qs.add_parser("export", help="write records to JSON Lines or CSV (e.g. onto a USB stick)")
    where(ex)
    ex.add_argument("--what", choices=["pending", "all", "dead-letters"], default="pending",
                    help="undelivered records (default), everything kept, or what the server refused")
    ex.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="default jsonl")
    ex.add_argument("--out", help="file to write (fsynced); default standard output")
    ex.add_argument("--mark-delivered", action="store_true",
                    help="after the file is on disk, count the exported records as delivered (use when the "
                    "stick goes to the central office instead of the network)")
    ex.set_defaults(func=cmd_export)

    p = sub.add_parser("pull", help="collect records from a device's pull API into a JSON Lines file",
                       description="Resumes from its own cursor file; acks only what is written and fsynced.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="device address, e.g. https://10.8.0.12:8787")
    p.add_argument("--token-file", required=True, help="file with the device's API token")
    p.add_argument("--out", required=True, help="JSON Lines file to append to")
    p.add_argument("--cursor-file", help="where the cursor is kept (default OUT.cursor)")
    p.add_argument("--limit", type=int, default=1000, help="records per request (the device caps it)")
    p.add_argument("--ca-file", help="CA bundle that signs the device's certificate (https)")
    p.add_argument("--follow", type=float, default=0, metavar="SECONDS",
                   help="keep pulling, polling this often; default: stop when caught up")
    p.set_defaults(func=cmd_pull)

