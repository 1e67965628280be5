"""Reading samples out of a /metrics page (Prometheus text format) in tests."""

from __future__ import annotations

import re


def samples(metrics: str, name: str, **labels: str) -> list[float]:
    """The values of the samples `name` whose labels include `labels`."""
    found = []
    for line in metrics.splitlines():
        m = re.match(rf"{re.escape(name)}(\{{(.*)\}})? (\S+)$", line)
        if m is None:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found.append(float(m.group(3)))
    return found


def sample(metrics: str, name: str, **labels: str) -> float:
    """The sum of those samples; an AssertionError if there is none (a metric missing is
    not a zero)."""
    values = samples(metrics, name, **labels)
    assert values, f"no sample {name} {labels}"
    return sum(values)
