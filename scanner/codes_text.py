"""What `codes verify` prints for a person: the verification in Chinese and English, and the
line saying what a gate would decide for that code (scanner.policy.decide, the lane's own table).
"""

from __future__ import annotations

from datetime import UTC, datetime

from scanner.credentials import Verification
from scanner.models import Measurement, TempStatus, Verdict
from scanner.policy import CheckpointRules, credential_reasons, decide, early_deny
from scanner.reasons import REASONS

_CODE_ZH = {
    "VALID": "有效",
    "FORMAT_UNSUPPORTED": "不是健康码/安居码",
    "FORMAT_INVALID": "格式错误",
    "UNKNOWN_SIGNER": "未知签发方",
    "SIGNATURE_INVALID": "签名无效（伪造）",
    "SIGNER_NOT_ALLOWED": "签发方无权签发此类码",
    "NOT_YET_VALID": "尚未生效",
    "EXPIRED": "已过期",
    "CLOCK_UNTRUSTED": "设备时钟不可信",
    "REVOKED": "已吊销",
    "DENYLISTED": "已列入黑名单",
    "CLAIMS_INVALID": "内容不合规",
    "TRUST_DATA_EXPIRED": "信任数据已过期",
    "ONLINE_UNAVAILABLE": "无法在线核验",
    "HEALTH_PENDING": "健康码待核验",
}
_KIND_ZH = {
    "health": "健康码 health code",
    "residence": "安居码 residence code",
    "dcc": "欧盟数字新冠证书 EU DCC",
}
_COLOUR_ZH = {"green": "绿码 green", "yellow": "黄码 yellow", "red": "红码 red"}


def _time(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts is not None else "-"


def format_human(r: Verification) -> str:
    """Bilingual text for staff and technicians. It shows the masked name and ID tail because a
    person compares them with the holder; JSON leaves them out unless asked."""
    lines = [f"结果 Result:   {_CODE_ZH.get(r.code, '')} {r.code}"]
    if r.kind:
        lines.append(f"类型 Kind:     {_KIND_ZH.get(r.kind, r.kind)}")
    if r.colour:
        lines.append(f"颜色 Colour:   {_COLOUR_ZH.get(r.colour, r.colour)}")
    if r.issuer:
        lines.append(f"签发 Issuer:   {r.issuer}")
    if r.masked_name or r.id_tail:
        lines.append(
            f"姓名 Name:     {r.masked_name or '-'}   证件尾号 ID tail: {r.id_tail or '-'}"
        )
    if r.region:
        lines.append(f"地区 Region:   {r.region}")
    if r.village:
        grid, house = r.grid or "-", r.house_id or "-"
        lines.append(f"村社 Village:  {r.village}   网格 Grid: {grid}   房屋 House: {house}")
    if r.issued_at is not None:
        since = r.not_before if r.not_before is not None else r.issued_at
        lines.append(f"有效期 Valid:  {_time(since)} → {_time(r.expires_at)}")
    if r.kid is not None:
        lines.append(f"密钥 Kid:      {r.kid.hex()}   信任列表 Trust list: v{r.trust_version}")
    if r.warnings:
        lines.append(f"警告 Warnings: {', '.join(r.warnings)}")
    lines.append(f"说明 Detail:   {r.detail}")
    return "\n".join(lines)


#: What the gate's thermometer reads for a healthy person: `gate_line` assumes it, and says so.
NORMAL = Measurement(TempStatus.OK, body_c=36.5)
_VERDICT_ZH = {Verdict.PASS: "通行", Verdict.REVIEW: "工作人员核验", Verdict.DENY: "禁止通行"}


def gate_line(r: Verification) -> str:
    """`闸机 Gate: VERDICT 中文 REASON 中文 / English` for this code shown alone at a gate.

    A health code (or any code with a known prefix) is decided by scanner.policy.decide at a
    highway exit with a normal temperature (NORMAL): the verdict is the lane's, and where the
    temperature could still change it (PASS, REVIEW) the line says "with a normal temperature".
    A residence code only counts beside a health code: the line says whether a village gate of
    its own village would accept it. A text that is no code is what the lane ignores."""
    if r.code == "FORMAT_UNSUPPORTED":
        return ("闸机 Gate:     不是码，闸机忽略，继续等待健康码 / not a code: the gate ignores it and waits for a "
                "health code")
    if r.kind == "residence":
        rules = CheckpointRules("village_gate", frozenset({r.village}) if r.village else frozenset())
        reasons = credential_reasons(r, rules)
        if not reasons:
            return (f"闸机 Gate:     本村（{r.village}）闸机接受此安居码，另需绿码和正常体温 / accepted at a "
                    f"village gate of {r.village}; a green health code and a normal temperature are still needed")
        verdict = Verdict.DENY if early_deny([r], rules) else Verdict.REVIEW
    else:
        d = decide([r], NORMAL, CheckpointRules())
        verdict, reasons = d.verdict, list(d.reasons)
    text = "; ".join(f"{code} {REASONS.get(code, (code, code))[0]} / {REASONS.get(code, (code, code))[1]}"
                     for code in reasons)
    normal = " (体温正常时 / with a normal temperature)" if verdict is not Verdict.DENY else ""
    return f"闸机 Gate:     {verdict.value} {_VERDICT_ZH[verdict]}: {text}{normal}"
