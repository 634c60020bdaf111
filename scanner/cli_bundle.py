"""`checkpoint-scanner codes bundle trust|status|policy`: sign trust data with the anchor key.

For a central server (or a technician at a bench) to produce exactly the files devices fetch
(docs/credentials.md section 3). Each bundle is opened again with the anchor certificate before it is
written, with the device's own parser, so the tool never emits a bundle that gates refuse.
Status entries are given as hex (32 characters = 16 bytes) in a JSON file:

  snapshot  {"revoked": [HEX, ...], "denylisted": [HEX, ...], "colour_updates": {HEX: 0|1|2}}
  diff      {"add": {<same keys>}, "remove": {"revoked": [...], "denylisted": [...],
             "colour_updates": [HEX, ...]}}       with --from-version N --total T
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scanner.numbers import loads_json

from .credentials import Signer, TrustStore
from .credentials.bundles import (
    KIND_POLICY,
    KIND_STATUS_DIFF,
    KIND_STATUS_SNAPSHOT,
    open_bundle,
    parse_policy,
    policy_doc,
    sign_bundle,
    status_diff_doc,
    status_snapshot_doc,
)
from .credentials.keygen import SignerEntry, sign_trust_list
from .credentials.status import StatusIndex
from .credentials.trust import load_certificate
from .errors import CredentialError, TrustDataError

_FMT = argparse.RawDescriptionHelpFormatter
_DESCRIPTION = """\
Sign trust data with the anchor key: exactly the files devices fetch from the central server
(trust list, status list, policy). Each bundle is opened again with the anchor certificate and
the device's own parser before it is written, so this never writes a bundle that gates refuse."""
_STATUS_DESCRIPTION = """\
Sign a status list: a snapshot, or a diff from --from-version. Entries are given as hex
(32 characters = 16 bytes) in a JSON file (--in):

  snapshot  {"revoked": [HEX, ...], "denylisted": [HEX, ...], "colour_updates": {HEX: 0|1|2}}
  diff      {"add": {<same keys>}, "remove": {"revoked": [...], "denylisted": [...],
             "colour_updates": [HEX, ...]}}       with --from-version N --total T"""
_EPILOG = """\
examples:
  checkpoint-scanner codes bundle trust  --keys demo-keys --version 2 -o trust-list.cose
  checkpoint-scanner codes bundle trust  --keys demo-keys --version 3 \\
      --signer demo-keys/health.pem:health:CN-330000-HC --signer dcc-signer.pem:dcc -o trust-list.cose
  checkpoint-scanner codes bundle policy --keys demo-keys --version 4 --fever-threshold-c 37.0 -o policy.cose
  checkpoint-scanner codes bundle status --keys demo-keys --version 7 --in status.json -o snapshot.cose
  checkpoint-scanner codes bundle status --keys demo-keys --version 8 --from-version 7 --total 12 \\
      --in diff.json -o diff-7.cose
"""


def add_parser(sub: Any) -> None:
    b = sub.add_parser("bundle", help="sign a trust list, status list or policy with the anchor key",
                       description=_DESCRIPTION, epilog=_EPILOG, formatter_class=_FMT)
    kinds = b.add_subparsers(dest="bundle_kind", metavar="{trust,status,policy}")
    trust = kinds.add_parser("trust", help="signed trust list (signer certificates and their types)",
                             epilog=_EPILOG, formatter_class=_FMT)
    status = kinds.add_parser("status", help="signed status list snapshot or diff", epilog=_EPILOG,
                              description=_STATUS_DESCRIPTION,
                              formatter_class=_FMT)
    policy = kinds.add_parser("policy", help="signed policy (thresholds the centre sets)", epilog=_EPILOG,
                              formatter_class=_FMT)
    for p in (trust, status, policy):
        p.add_argument("--keys", metavar="DIR", help="keygen directory: DIR/anchor.key and DIR/anchor.pem")
        p.add_argument("--anchor-key", metavar="FILE", help="anchor private key (PEM, EC P-256)")
        p.add_argument("--anchor-cert", metavar="FILE", help="anchor certificate (PEM or DER)")
        p.add_argument("--version", type=int, required=True, help="bundle version; devices take only newer ones")
        p.add_argument("--valid-days", type=float, default=30.0, help="expires_at = now + this (default 30)")
        p.add_argument("-o", "--out", required=True, metavar="FILE", help="output file")
    trust.add_argument("--signer", action="append", default=[], metavar="CERT:TYPES[:ISSUER]",
                       help="signer certificate, comma-separated types (health,residence,dcc) and issuer; "
                       "repeat. Default with --keys: the keygen health and residence signers")
    status.add_argument("--in", dest="input", metavar="FILE", help="JSON entries (format above); default: empty")
    status.add_argument("--from-version", type=int, help="make a diff from this version (needs --total)")
    status.add_argument("--total", type=int, help="diff: entries after applying it (devices check the count)")
    policy.add_argument("--fever-threshold-c", type=float, help="fever threshold, °C (35..40)")
    policy.add_argument("--clock-skew-s", type=int, help="allowed clock skew, seconds (0..3600)")
    policy.add_argument("--max-code-age-s", type=int, help="health codes older than this are EXPIRED, seconds")
    for name in ("trust", "status", "policy"):
        policy.add_argument(f"--{name}-max-age-s", type=int, help=f"{name} data older than this warns, seconds")


def _anchor(args: argparse.Namespace) -> Signer:
    if args.keys and (args.anchor_key or args.anchor_cert):
        raise CredentialError("give --keys DIR or --anchor-key/--anchor-cert, not both; fix: drop one")
    if args.keys:
        return Signer.load(Path(args.keys) / "anchor.key", Path(args.keys) / "anchor.pem")
    if args.anchor_key and args.anchor_cert:
        return Signer.load(args.anchor_key, args.anchor_cert)
    raise CredentialError("no anchor key; fix: pass --keys DIR, or --anchor-key FILE --anchor-cert FILE")


def _signers(args: argparse.Namespace) -> list[SignerEntry]:
    specs = list(args.signer)
    if not specs and args.keys:
        d = Path(args.keys)
        specs = [f"{d / 'health.pem'}:health:CN-330000-HC", f"{d / 'residence.pem'}:residence:CN-330381-JD01"]
    if not specs:
        raise CredentialError("no signers; fix: add --signer CERT:TYPES[:ISSUER] (or --keys DIR for the demo ones)")
    out = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) < 2 or not parts[1]:
            raise CredentialError(f"--signer {spec!r} is not CERT:TYPES[:ISSUER]; fix: e.g. health.pem:health:CN-HC")
        types = tuple(t.strip() for t in parts[1].split(",") if t.strip())
        bad = [t for t in types if t not in ("health", "residence", "dcc")]
        if bad:
            raise CredentialError(f"--signer type {bad[0]!r} unknown; fix: use health, residence or dcc")
        cert = load_certificate(parts[0], "signer certificate")
        out.append(SignerEntry(cert, types, ":".join(parts[2:]) or cert.subject.rfc4514_string()))
    return out


def _hashes(values: Any, what: str) -> list[bytes]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise CredentialError(f"--in: '{what}' must be a list of 32-character hex hashes; fix: correct the file")
    try:
        out = [bytes.fromhex(v) for v in values]
    except (TypeError, ValueError):
        raise CredentialError(f"--in: '{what}' has an entry that is not hex; fix: correct the file") from None
    if any(len(h) != 16 for h in out):
        raise CredentialError(f"--in: '{what}' entries must be 16 bytes (32 hex characters); fix: correct the file")
    return out


def _colours(values: Any, what: str) -> dict[bytes, int]:
    if values is None:
        return {}
    if not isinstance(values, dict) or any(c not in (0, 1, 2) or isinstance(c, bool) for c in values.values()):
        raise CredentialError(f"--in: '{what}' must map hex subject hashes to 0, 1 or 2; fix: correct the file")
    return dict(zip(_hashes(list(values), what), values.values(), strict=True))


def _status_doc(args: argparse.Namespace, now: datetime, expires: datetime) -> dict[str, Any]:
    entries: dict[str, Any] = {}
    if args.input:
        try:
            entries = loads_json(Path(args.input).read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CredentialError(f"cannot read --in {args.input} ({e.__class__.__name__}); fix: give a JSON "
                                  "file as shown in `codes bundle status --help`") from None
        if not isinstance(entries, dict):
            raise CredentialError("--in must hold a JSON object; fix: see `codes bundle status --help`")
    if args.from_version is None:
        return status_snapshot_doc(args.version, now, expires, revoked=_hashes(entries.get("revoked"), "revoked"),
                                   denylisted=_hashes(entries.get("denylisted"), "denylisted"),
                                   colour_updates=_colours(entries.get("colour_updates"), "colour_updates"))
    if args.total is None or args.total < 0:
        raise CredentialError("a diff needs --total (entries after applying it); fix: add --total N")
    if args.version <= args.from_version:
        raise CredentialError("--version must be above --from-version; fix: e.g. --from-version 7 --version 8")
    add, remove = entries.get("add") or {}, entries.get("remove") or {}
    return status_diff_doc(
        args.from_version, args.version, now, expires, args.total,
        add_revoked=_hashes(add.get("revoked"), "add.revoked"),
        add_denylisted=_hashes(add.get("denylisted"), "add.denylisted"),
        add_colours=_colours(add.get("colour_updates"), "add.colour_updates"),
        remove_revoked=_hashes(remove.get("revoked"), "remove.revoked"),
        remove_denylisted=_hashes(remove.get("denylisted"), "remove.denylisted"),
        remove_colours=_hashes(remove.get("colour_updates"), "remove.colour_updates"))


def run(args: argparse.Namespace) -> int:
    kind = getattr(args, "bundle_kind", None)
    if kind not in ("trust", "status", "policy"):
        raise CredentialError("missing bundle type; fix: `codes bundle trust|status|policy` (see --help)")
    if args.version < 0 or args.valid_days <= 0:
        raise CredentialError("--version must be >= 0 and --valid-days > 0; fix: e.g. --version 2 --valid-days 30")
    anchor = _anchor(args)
    now = datetime.now(UTC).replace(microsecond=0)
    expires = now + timedelta(days=args.valid_days)
    if kind == "trust":
        raw = sign_trust_list(anchor.key, anchor.cert, _signers(args), args.version, now, expires)
        store = TrustStore.from_bytes(raw, anchor.cert, "(just signed)")
        summary = f"trust list version {store.version} ({len(store)} signers)"
    elif kind == "policy":
        doc = policy_doc(args.version, now, expires, fever_threshold_c=args.fever_threshold_c,
                         clock_skew_s=args.clock_skew_s, max_code_age_s=args.max_code_age_s)
        ages = {n: getattr(args, f"{n}_max_age_s") for n in ("trust", "status", "policy")}
        if any(v is not None for v in ages.values()):
            doc["max_age_s"] = {k: v for k, v in ages.items() if v is not None}
        raw = sign_bundle(anchor.key, anchor.cert, doc)
        try:
            policy = parse_policy(open_bundle(raw, anchor.cert, KIND_POLICY, "(just signed)"))
        except TrustDataError as e:  # out-of-range value: say which option to change
            raise CredentialError(str(e).split(";")[0] + "; fix: change that option") from None
        summary = f"policy version {policy.version}"
    else:
        doc = _status_doc(args, now, expires)
        raw = sign_bundle(anchor.key, anchor.cert, doc)
        kind_name = KIND_STATUS_DIFF if args.from_version is not None else KIND_STATUS_SNAPSHOT
        bundle = open_bundle(raw, anchor.cert, kind_name, "(just signed)")
        if kind_name == KIND_STATUS_SNAPSHOT:
            summary = f"status snapshot version {bundle.version} ({len(StatusIndex.from_bundle(bundle))} entries)"
        else:
            summary = f"status diff {args.from_version} -> {bundle.version} (total {args.total})"
    Path(args.out).write_bytes(raw)
    print(f"wrote {summary}, expires {expires:%Y-%m-%d %H:%M} UTC, to {args.out}")
    return 0
