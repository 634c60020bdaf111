"""Every reason code with the text a person reads: Chinese first, then English.

The reason codes are the strings of docs/credentials.md (sections 4 and 5); staff see the text
on the kiosk and the status page, technicians in the journal. A test checks that every code the policy can emit is here.
"""

from __future__ import annotations

# code -> (Chinese, English)
REASONS: dict[str, tuple[str, str]] = {
    "OK": ("核验通过", "all checks passed"),
    "HEALTH_RED": ("健康码红码", "health code is red"),
    "HEALTH_YELLOW": ("健康码黄码", "health code is yellow"),
    "FEVER": ("体温异常，请用水银体温计复测",
              "temperature at or above the fever threshold: re-check with a clinical thermometer"),
    "SIGNATURE_INVALID": ("码签名无效（伪造）", "signature invalid (forged code)"),
    "EXPIRED": ("码已过期（截图？）", "code expired (old screenshot?)"),
    "REVOKED": ("码已被撤销", "code revoked"),
    "DENYLISTED": ("码被列入黑名单", "code is deny-listed"),
    "FORMAT_INVALID": ("码格式损坏", "code is damaged or malformed"),
    "CLAIMS_INVALID": ("码内容不合规范", "code content is invalid"),
    "SIGNER_NOT_ALLOWED": ("签发机构无权签发此类码", "signer not allowed for this kind of code"),
    "UNKNOWN_SIGNER": ("签发机构未知，请人工核验", "unknown signer: staff check"),
    "NOT_YET_VALID": ("码尚未生效（设备时钟？）", "code not yet valid (device clock?)"),
    "CLOCK_UNTRUSTED": ("设备时间未同步，请人工核验", "device clock not synchronised: staff check"),
    "TRUST_DATA_EXPIRED": ("信任数据过期，请人工核验", "trust data expired: staff check"),
    "TRUST_DATA_STALE": ("信任数据过旧（设备离线？），请人工核验", "trust data too old (device offline?): staff check"),
    "TRUST_DATA_MISSING": ("未收到撤销名单或策略，请人工核验", "revocation list or policy never received: staff check"),
    "RECENTLY_DENIED": ("此码刚被拦截，请人工复核", "this code was just refused here: staff re-check"),
    "ONLINE_UNAVAILABLE": ("无法在线核验，请人工核验", "online check unavailable: staff check"),
    "HEALTH_PENDING": ("健康码待核验", "health code pending (init)"),
    "NO_CODE": ("未出示健康码", "no health code shown"),
    "RESIDENCE_MISSING": ("未出示安居码", "no residence code shown"),
    "RESIDENCE_OTHER_VILLAGE": ("安居码不属于本村", "residence code is for another village"),
    "TEMP_UNAVAILABLE": ("未测得体温，请将手腕靠近测温区", "no temperature: hold your wrist to the sensor"),
    "TEMP_UNSTABLE": ("体温读数不稳，请保持不动", "temperature unstable: hold still"),
    "TEMP_UNRELIABLE": ("环境温度过低、过高或变化过快，请人工测温",
                        "ambient too cold, too hot or changing fast: measure by hand"),
    "FORMAT_UNSUPPORTED": ("这不是健康码", "this is not a health code"),
    "STAFF_OVERRIDE": ("工作人员放行/拦截", "staff override"),
}

PROMPTS: dict[str, tuple[str, str]] = {
    "READY": ("请出示健康码，并将手腕靠近测温区", "show your health code and hold your wrist to the sensor"),
    "SHOW_CODE": ("请出示健康码", "please show your health code"),
    "SHOW_RESIDENCE": ("请出示安居码", "please show your residence code"),
    "HOLD_WRIST": ("请将手腕靠近测温区", "hold your wrist to the sensor"),
    "NOT_A_CODE": ("这不是健康码，请出示健康码", "this is not a health code: show your health code"),
    "PASS": ("通行", "PASS"),
    "DENY": ("禁止通行", "DENY"),
    "REVIEW": ("请稍候 工作人员核验", "please wait: staff will check"),
    "FAULT": ("设备故障，请联系工作人员", "device fault: please call staff"),
}


def describe(code: str) -> str:
    """'中文 / English (CODE)': one line for logs, the demo and the kiosk."""
    zh, en = REASONS.get(code, (code, code))
    return f"{zh} / {en} ({code})"


def prompt(key: str) -> str:
    zh, en = PROMPTS[key]
    return f"{zh} / {en}"
