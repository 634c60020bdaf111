"""`checkpoint-scanner queue status|export` for a technician on site, and `pull` for the
central side. The work is in scanner/outbox.py, scanner/outbox_salvage.py (a damaged outbox:
what can be read is exported, the rest counted) and scanner/sync/pull.py."""

from __future__ import annotations

import argparse
import csv
import errno
import json
import os
import sqlite3
import stat
import sys
import time
from datetime import UTC, datetime
from typing import Any

from scanner.errors import ScannerError, StoreError
from scanner.outbox_salvage import Salvage, check_file, explain, ranges

DEFAULT_CONFIG = "/etc/checkpoint-scanner/config.toml"
EPILOG = """\
examples:
  checkpoint-scanner queue status                         counts, oldest pending, last delivery
  checkpoint-scanner queue status --db /media/usb/outbox.db --json
  checkpoint-scanner queue export --out /media/usb/pending.jsonl          undelivered records
  checkpoint-scanner queue export --what all --format csv --out all.csv
  checkpoint-scanner queue export --out /media/usb/p.jsonl --mark-delivered   then they may be pruned
  checkpoint-scanner queue export --what dead-letters --out dead.jsonl    what the server refused
  checkpoint-scanner queue export --db corrupt-20261128/outbox.db --what all --out /media/usb/saved.jsonl
                                      a damaged outbox: what can be read, and how many rows could not
"""
PULL_EPILOG = """\
examples:
  checkpoint-scanner pull https://10.8.0.12:8787 --token-file gate3.token --out gate3.jsonl
  checkpoint-scanner pull https://10.8.0.12:8787 --token-file gate3.token --ca-file vpn-ca.pem \\
      --out gate3.jsonl --follow 60          keep collecting, every 60 s
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
    check_file(path)  # a directory, a 0-byte or text file, another database: one line with the fix
    conn = connect(path, readonly=True)
    try:
        st = outbox.status(conn, path, max_bytes)
    except sqlite3.DatabaseError as e:
        raise explain(path, e) from None
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


def _write_error(e: OSError, out: str, done: int) -> ScannerError:
    """One line for a failure to write --out, naming the fix (never `[Errno 21] ...`)."""
    parent = os.path.dirname(os.path.abspath(out))
    why = {
        errno.EISDIR: f"{out} is a directory; fix: give a file name in it, e.g. {os.path.join(out, 'pending.jsonl')}",
        errno.ENOENT: f"the directory {parent} does not exist (is the USB stick mounted?); fix: mount it or create it",
        errno.EACCES: f"cannot write in {parent}: permission denied; fix: choose a directory you can write, or sudo",
        errno.ENOSPC: f"{parent} is full after {done} record(s); fix: free space or use a larger stick",
        errno.EROFS: f"{parent} is read-only (a write-protected stick?); fix: unlock it or choose another place",
    }.get(e.errno or 0, f"cannot write {out} ({e.strerror or e}); fix: check the stick or choose another place")
    if e.errno == errno.ENOENT and os.path.isdir(parent):
        why = f"cannot create {out} ({e.strerror}); fix: choose a file on the USB stick or in your home directory"
    return ScannerError(why if e.errno in (errno.EISDIR, errno.ENOENT) else f"{why}; {out} was not written")


def _write(rows: Salvage, out: Any, fmt: str, progress: bool) -> int:
    done, t_last = 0, time.monotonic()
    writer: csv.DictWriter[str] | None = None
    for page in rows.pages():
        for r in page:
            if fmt == "csv":
                flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                        for k, v in r.items()}
                if writer is None:
                    writer = csv.DictWriter(out, fieldnames=list(flat), extrasaction="ignore")
                    writer.writeheader()
                writer.writerow(flat)
            else:
                out.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
        done += len(page)
        if progress and time.monotonic() - t_last >= 1.0:
            t_last = time.monotonic()
            total = rows.total if rows.total is not None else "?"
            print(f"exported 已导出 {done}/{total}", file=sys.stderr)
    return done


def cmd_export(args: argparse.Namespace) -> int:
    """Export to --out (written to a temporary file, fsynced, then renamed: never a partial or
    empty file) or standard output. A damaged outbox is salvaged: every row that can be read is
    exported and the unreadable ones counted (exit 1 then, and nothing is marked delivered)."""
    from scanner import outbox
    from scanner.store import connect

    if args.mark_delivered and (not args.out or args.what == "dead-letters"):
        raise ScannerError("--mark-delivered needs --out FILE and --what pending or all; fix: write to a file "
                           "(it is fsynced before anything is marked)")
    if args.out and os.path.isdir(args.out):
        raise _write_error(OSError(errno.EISDIR, "Is a directory"), args.out, 0)
    if args.out and os.path.lexists(args.out) and not stat.S_ISREG(os.lstat(args.out).st_mode):
        # the export renames a temporary file into place: over a device node or a link that
        # would put the records somewhere else (RAM for /dev/*) and then mark them delivered
        raise ScannerError(f"{args.out} is not a plain file (a device, a link or a pipe); fix: mount the USB "
                           "stick and give a file path on it, e.g. /media/usb/records.jsonl / 请挂载U盘并给出文件路径")
    if args.out and os.path.exists(args.out) and not args.force:
        raise ScannerError(f"{args.out} already exists; fix: choose another file name, or add --force to replace it")
    path, _ = _db(args)
    rows = Salvage(path, args.what)
    for note in rows.notes:
        print(f"note 注意: {note}", file=sys.stderr)
    if not args.out:
        try:
            done = _write(rows, sys.stdout, args.format, progress=False)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted; no traceback
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, as a shell reports a pipe writer that stopped
    else:
        done = _export_file(rows, args.out, args.format)
    lost = f"; {len(rows.lost)} unreadable 无法读取 (seq {ranges(rows.lost)})" if rows.lost else ""
    of = f" of {rows.total}" if rows.total is not None and rows.total > done else ""
    print(f"exported 已导出 {done}{of} record(s){' to ' + args.out if args.out else ''}{lost}", file=sys.stderr)
    if rows.lost:
        print("the outbox is damaged: those rows are lost from this copy; fix: keep the damaged file for the "
              "central office" + ("; nothing was marked delivered" if args.mark_delivered else ""), file=sys.stderr)
        return 1
    if args.mark_delivered and rows.end > rows.start and done:
        conn = connect(path)
        try:
            mark = outbox.mark_delivered(conn, rows.end, "export")
        finally:
            conn.close()
        print(f"marked delivered 已标记交付 up to seq {mark}; they are pruned after [store] retention_days",
              file=sys.stderr)
    return 0


def _export_file(rows: Salvage, out: str, fmt: str) -> int:
    """Write to a hidden temporary file beside `out`, fsync, rename over `out`, fsync the
    directory. On any failure the temporary file is removed and `out` is left as it was."""
    parent = os.path.dirname(os.path.abspath(out))
    tmp = os.path.join(parent, f".{os.path.basename(out)}.{os.getpid()}.partial")
    done = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            done = _write(rows, f, fmt, progress=True)
            f.flush()
            os.fsync(f.fileno())
        if rows.lost and not done:  # not one row readable: no empty file that looks like an export
            raise explain(rows.path, sqlite3.DatabaseError(f"none of seq {ranges(rows.lost)} can be read"), True)
        os.replace(tmp, out)
        try:
            dir_fd = os.open(parent, os.O_RDONLY)
        except OSError:
            return done  # some file systems (FAT on Windows-made sticks) cannot open a directory: rename is done
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
        return done
    except StoreError:  # reading the outbox failed (an OSError too): its own message
        raise
    except OSError as e:
        raise _write_error(e, out, done) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
                       description="上报队列 / Look into the outbox without stopping the daemon (read-only unless "
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
    ex.add_argument("--force", action="store_true", help="replace --out if it exists")
    ex.add_argument("--mark-delivered", action="store_true",
                    help="after the file is on disk, count the exported records as delivered (use when the "
                    "stick goes to the central office instead of the network)")
    ex.set_defaults(func=cmd_export)

    p = sub.add_parser("pull", help="collect records from a device's pull API into a JSON Lines file",
                       description="拉取记录 / Collect a device's records over the network into a JSON Lines file. "
                       "Resumes from its own cursor file; acks only what is written and fsynced.",
                       epilog=PULL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="device address, e.g. https://10.8.0.12:8787")
    p.add_argument("--token-file", required=True, help="file with the device's API token")
    p.add_argument("--out", required=True, help="JSON Lines file to append to")
    p.add_argument("--cursor-file", help="where the cursor is kept (default OUT.cursor)")
    p.add_argument("--limit", type=int, default=1000, help="records per request (the device caps it)")
    p.add_argument("--ca-file", help="CA bundle that signs the device's certificate (https)")
    p.add_argument("--follow", type=float, default=0, metavar="SECONDS",
                   help="keep pulling, polling this often; default: stop when caught up")
    p.set_defaults(func=cmd_pull)

