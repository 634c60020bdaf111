"""`checkpoint-scanner codes ...`: make a demo trust chain, issue codes, verify a code or a photo.

The work is in `scanner.credentials`; this module is the argparse wiring, and the human output
(scanner/codes_text.py) in Chinese and English, JSON for tools. Exit codes: 0 VALID, 1 not valid,
2 usage or setup error (a path that does not exist among them). Errors are one line
(`error: ...; fix: ...`), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .codes_text import format_human, gate_line
from .credentials import (
    Signer,
    TrustStore,
    generate_keys,
    issue_health,
    issue_residence,
    pseudonym,
    qr_png,
    verify,
)
from .errors import CredentialError, ScannerError

EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
DEFAULT_KEY_DIR = "demo-keys"

_FMT = argparse.RawDescriptionHelpFormatter

_CODES_EPILOG = """\
examples:
  checkpoint-scanner codes keygen demo-keys
  checkpoint-scanner codes issue health --signer-dir demo-keys --colour green --png health.png
  checkpoint-scanner codes issue residence --signer-dir demo-keys --village 330381001001
  checkpoint-scanner codes verify --keys demo-keys health.png
  checkpoint-scanner codes verify --json --trust-list /var/lib/checkpoint-scanner/trust/trust-list.cose \\
      --anchor /etc/checkpoint-scanner/anchor.crt 'ZHC1:...'
"""

_VERIFY_EPILOG = """\
The argument is the code text, or the path of an image containing QR codes (PNG/JPEG).
Trust data: --keys DIR (a keygen directory) or --trust-list FILE --anchor FILE (the device's files).
The last line says what a gate would decide for the code alone: a red code is VALID (its
signature holds) and the gate's DENY HEALTH_RED.
Exit status: 0 VALID, 1 anything else, 2 usage or setup error (an image path that does not exist).

examples:
  checkpoint-scanner codes verify --keys demo-keys health.png
  checkpoint-scanner codes verify --keys demo-keys --now 2030-01-01T00:00:00Z 'ZHC1:...'
  checkpoint-scanner codes verify --json --trust-list /var/lib/checkpoint-scanner/trust/trust-list.cose \\
      --anchor /etc/checkpoint-scanner/anchor.crt photo.jpg
"""

def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `codes` (with keygen / issue / verify) on the main CLI's subparsers."""
    codes = subparsers.add_parser(
        "codes",
        help="make keys, issue and verify signed health / residence codes",
        description="健康码工具 / Signed credential tools: a demo trust chain, demo codes, and verification "
        "of a code text or a QR photo exactly as the gate does it.",
        epilog=_CODES_EPILOG,
        formatter_class=_FMT,
    )
    codes.set_defaults(func=run)
    sub = codes.add_subparsers(dest="codes_command", metavar="{keygen,issue,verify,bundle}")

    kg = sub.add_parser(
        "keygen",
        help="create a demo anchor, signer keys and a signed trust list",
        description="Writes anchor.key/anchor.pem (trust anchor), health.key/.pem and "
        "residence.key/.pem (signers), pseudonym.secret and trust-list.cose into DIR. "
        "Keys are mode 0600: copy only anchor.pem and trust-list.cose to a device.",
        epilog="example:\n  checkpoint-scanner codes keygen demo-keys",
        formatter_class=_FMT,
    )
    kg.add_argument("dir", metavar="DIR", help="output directory (created if missing)")
    kg.add_argument(
        "--validity-days", type=int, default=730, help="signer certificate validity (default 730)"
    )
    kg.add_argument(
        "--trust-list-days", type=int, default=90, help="trust list lifetime (default 90)"
    )
    kg.add_argument("--force", action="store_true", help="replace existing keys in DIR")

    issue = sub.add_parser(
        "issue",
        help="issue a demo health or residence code",
        description="Sign a demo code with a keygen directory's signer key and print its text.",
        epilog="examples:\n  checkpoint-scanner codes issue health --colour yellow --png h.png\n"
        "  checkpoint-scanner codes issue residence --village 330381001001 --grid G-0042",
        formatter_class=_FMT,
    )
    kinds = issue.add_subparsers(dest="issue_kind", metavar="{health,residence}")
    health = kinds.add_parser(
        "health",
        help="a ZHC1: health code",
        formatter_class=_FMT,
        epilog="example:\n  checkpoint-scanner codes issue health "
        "--signer-dir demo-keys --colour red --valid-hours 2 --png red.png",
    )
    residence = kinds.add_parser(
        "residence",
        help="an AJM1: residence code",
        formatter_class=_FMT,
        epilog="example:\n  checkpoint-scanner codes issue residence "
        "--signer-dir demo-keys --village 330381001001 --unit 3幢2单元502",
    )
    for p in (health, residence):
        p.add_argument(
            "--signer-dir",
            default=DEFAULT_KEY_DIR,
            help=f"keygen directory (default {DEFAULT_KEY_DIR})",
        )
        p.add_argument("--issuer", help="iss claim (default: the demo issuer of that signer)")
        p.add_argument("--masked-name", default="陈*聪", help="masked name for the visual check")
        p.add_argument(
            "--id-number",
            help="derive the subject pseudonym and ID tail from this ID "
            "(never stored in the code); default: a random pseudonym",
        )
        p.add_argument(
            "--id-type", default="01", help="ID type code for the pseudonym (default 01)"
        )
        p.add_argument("--id-tail", default="1234", help="last 4 ID characters (default 1234)")
        p.add_argument("--png", metavar="FILE", help="also write the QR code as a PNG")
        p.add_argument("--scale", type=int, default=8, help="PNG pixels per module (default 8)")
    health.add_argument("--colour", "--color", choices=("green", "yellow", "red"), default="green")
    health.add_argument(
        "--valid-hours", type=float, default=24.0, help="lifetime, at most 24 (default 24)"
    )
    health.add_argument("--region", default="330381", help="6-digit division code (default 330381)")
    residence.add_argument(
        "--house-id", default="HZ-330381-000123", help="registered rental house id"
    )
    residence.add_argument("--village", default="330381001001", help="12-digit village code")
    residence.add_argument("--grid", default="G-0042", help="micro-grid id")
    residence.add_argument(
        "--unit", default="3幢2单元502", help="coarse unit label (no street address)"
    )
    residence.add_argument("--verified-by", default="安阳街道", help="verifying street office")
    residence.add_argument(
        "--valid-days", type=float, default=365.0, help="lease length, at most 365"
    )

    ver = sub.add_parser(
        "verify",
        help="verify a code text or a QR image, print the result",
        description="Verify exactly as the gate does; print the result in Chinese and English, "
        "or as JSON.",
        epilog=_VERIFY_EPILOG,
        formatter_class=_FMT,
    )
    ver.add_argument(
        "code", metavar="TEXT|IMAGE", help="code text, or path of an image with a QR code"
    )
    ver.add_argument("--json", action="store_true", help="print one JSON object per code")
    ver.add_argument(
        "--show-personal", action="store_true", help="include masked name and ID tail in JSON"
    )
    ver.add_argument("--keys", metavar="DIR", help="use DIR/trust-list.cose and DIR/anchor.pem")
    ver.add_argument("--trust-list", metavar="FILE", help="signed trust list file")
    ver.add_argument("--anchor", metavar="FILE", help="pinned anchor certificate (PEM or DER)")
    ver.add_argument(
        "--now", metavar="ISO", help="verify as of this time, e.g. 2030-01-01T00:00:00Z"
    )
    ver.add_argument("--skew-s", type=int, default=300, help="allowed clock skew (default 300)")
    from . import cli_bundle

    cli_bundle.add_parser(sub)
    return codes


def _fail(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # always exactly one line
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    """Dispatch `codes ...`; every error becomes one line on stderr and exit status 2."""
    command = getattr(args, "codes_command", None)
    try:
        if command == "keygen":
            return _keygen(args)
        if command == "issue":
            return _issue(args)
        if command == "verify":
            return _verify(args)
        if command == "bundle":
            from . import cli_bundle

            return cli_bundle.run(args)
        return _fail("missing command; fix: use `codes keygen|issue|verify|bundle` (see `codes --help`)")
    except ScannerError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.strerror or exc} ({exc.filename}); fix: check the path and permissions")
    except Exception as exc:  # the contract is one line, never a traceback
        return _fail(f"unexpected {type(exc).__name__}: {exc}; fix: report this with the command")


def _keygen(args: argparse.Namespace) -> int:
    if args.validity_days < 1 or args.trust_list_days < 1:
        return _fail("--validity-days and --trust-list-days must be at least 1; fix: e.g. 730 / 90")
    ks = generate_keys(
        args.dir,
        validity_days=args.validity_days,
        trust_list_days=args.trust_list_days,
        overwrite=args.force,
    )
    print(f"wrote demo keys to {ks.directory}:")
    for label, path in (
        ("anchor certificate (pin on devices)", ks.anchor_cert),
        ("trust list (copy to devices)", ks.trust_list),
        ("health signer", ks.health_cert),
        ("residence signer", ks.residence_cert),
    ):
        print(f"  {label}: {path}")
    return EXIT_VALID


def _subject(args: argparse.Namespace, key_dir: Path) -> tuple[bytes, str]:
    if not args.id_number:
        return os.urandom(16), args.id_tail
    secret_path = key_dir / "pseudonym.secret"
    try:
        secret = secret_path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(
            f"{secret_path} not found; fix: run `codes keygen {key_dir}`"
        ) from None
    number = args.id_number.strip().upper()
    return pseudonym(secret, args.id_type, number), number[-4:]


def _issue(args: argparse.Namespace) -> int:
    kind = getattr(args, "issue_kind", None)
    if kind not in ("health", "residence"):
        return _fail(
            "missing credential type; fix: `codes issue health` or `codes issue residence`"
        )
    key_dir = Path(args.signer_dir)
    signer = Signer.load(key_dir / f"{kind}.key", key_dir / f"{kind}.pem")
    sid, id_tail = _subject(args, key_dir)
    now = datetime.now(UTC).replace(microsecond=0)
    extra = {"issuer": args.issuer} if args.issuer else {}
    if kind == "health":
        if not 0 < args.valid_hours <= 24:
            return _fail("--valid-hours must be in (0, 24]; fix: health codes live a day at most")
        text = issue_health(
            signer,
            colour=args.colour,
            sid=sid,
            masked_name=args.masked_name,
            id_tail=id_tail,
            region=args.region,
            iat=now,
            exp=now + timedelta(hours=args.valid_hours),
            **extra,
        )
    else:
        if not 0 < args.valid_days <= 365:
            return _fail(
                "--valid-days must be in (0, 365]; fix: residence codes live a year at most"
            )
        text = issue_residence(
            signer,
            house_id=args.house_id,
            village=args.village,
            grid=args.grid,
            unit_label=args.unit,
            tenant_sid=sid,
            masked_name=args.masked_name,
            id_tail=id_tail,
            verified_by=args.verified_by,
            iat=now,
            nbf=now,
            exp=now + timedelta(days=args.valid_days),
            **extra,
        )
    # Self-check before anything is printed: a bad option (say a 5-digit region) would otherwise
    # produce a code that every gate refuses, which is hard to diagnose at the gate.
    check = verify(text, TrustStore.from_certificates([signer.cert], [kind]), now)
    if not check.ok:
        return _fail(
            f"the code would not verify ({check.code}: {check.detail}); fix: check the options"
        )
    if args.png:
        qr_png(text, args.png, scale=args.scale)
    print(text)
    return EXIT_VALID


def read_qr_image(path: Path | str) -> list[bytes]:
    """QR payloads in an image file, read exactly as the gate reads a camera frame."""
    import cv2  # imported here: heavy, and only needed for images

    from scanner.decode import decode_frame

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CredentialError(
            f"cannot read image {path}; fix: give a PNG or JPEG file, or the code text"
        )
    return [c.data for c in decode_frame(image, budget_ms=2000.0)]  # a photo: time for the whole ladder


def _load_trust(args: argparse.Namespace) -> TrustStore:
    if args.keys and (args.trust_list or args.anchor):
        raise CredentialError("give --keys DIR or --trust-list/--anchor, not both; fix: drop one")
    if args.keys:
        return TrustStore.load(Path(args.keys) / "trust-list.cose", Path(args.keys) / "anchor.pem")
    if args.trust_list and args.anchor:
        return TrustStore.load(args.trust_list, args.anchor)
    raise CredentialError("no trust data; fix: pass --keys DIR, or --trust-list FILE --anchor FILE")


def _parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    try:
        now = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CredentialError(
            f"--now {value!r} is not an ISO time; fix: e.g. 2030-01-01T08:00:00+08:00"
        ) from None
    return now if now.utcoffset() is not None else now.replace(tzinfo=UTC)


def _verify(args: argparse.Namespace) -> int:
    is_image = _is_path(args.code)  # first: a mistyped path is named before missing trust options
    trust = _load_trust(args)
    now = _parse_now(args.now)
    if is_image:
        payloads: list[str | bytes] = list(read_qr_image(args.code))
        if not payloads:
            print("未找到二维码 no QR code found in the image", file=sys.stderr)
            return EXIT_INVALID
    else:
        payloads = [args.code]
    results = [verify(p, trust, now, skew_s=args.skew_s) for p in payloads]
    for i, result in enumerate(results):
        if args.json:
            print(
                json.dumps(result.as_dict(include_personal=args.show_personal), ensure_ascii=False)
            )
        else:
            if i:
                print()
            print(format_human(result))
            print(gate_line(result))
    return EXIT_VALID if all(r.ok for r in results) else EXIT_INVALID


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_CODE_PREFIX = re.compile(r"^[A-Z0-9]{2,8}:")  # ZHC1:, AJM1:, HC1: and any other credential prefix


def _is_path(arg: str) -> bool:
    """True for an existing file; CredentialError (exit 2) for what is meant as a path but is not
    a file (a directory; a missing name ending in .png or holding a directory part), so a typo
    is not verified as code text and reported as "not a health code"."""
    if os.path.isfile(arg):
        return True
    if _CODE_PREFIX.match(arg) or "://" in arg:
        return False
    if os.path.isdir(arg):
        raise CredentialError(f"{arg} is a directory; fix: give an image file in it, or the code text")
    if arg.lower().endswith(_IMAGE_SUFFIXES) or os.sep in arg or arg.startswith(("~", ".")):
        raise CredentialError(f"no such file: {arg}; fix: check the path (the image must exist), or give the "
                              "code text in quotes")
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry (`python -m scanner.cli_codes codes ...`) until the main CLI wires it."""
    parser = argparse.ArgumentParser(prog="checkpoint-scanner", formatter_class=_FMT)
    sub = parser.add_subparsers(dest="command", metavar="{codes}")
    add_parser(sub)
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
