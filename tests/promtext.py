"""Parse a /metrics body with prometheus_client's own parser (no substring matching: a value is
written 5.24288e+06 or 1.0, and a test must compare numbers, not spellings)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, float]:
    """`name` or `name{k="v",...}` (labels sorted) -> value, for every sample of the exposition."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def types(text: str) -> dict[str, str]:
    """Family name (as the parser reports it: counters without `_total`) -> type."""
    return {fam.name: fam.type for fam in text_string_to_metric_families(text)}
