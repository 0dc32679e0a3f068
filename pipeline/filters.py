"""``--filter 'pose_people >= 1'``: keep only samples whose per-sample stats pass every rule.

A rule is ``STAT OP NUMBER`` (``>=``, ``>``, ``<=``, ``<``, ``==``, ``!=``; spaces optional);
``STAT`` is a name an annotator declares in its ``stats`` attribute, optionally qualified
by the annotator (``canny.canny_density``) when two annotators emit the same name. Rules
are parsed and checked against the chosen annotators before any work starts, then
travel to the workers as plain data; a rejected sample gets ``status=filtered`` and one
line naming the rule (``filtered: pose_people >= 1 (was 0)``).
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
       "==": operator.eq, "!=": operator.ne}  # fmt: skip
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_RULE = re.compile(rf"\s*(?:({_NAME})\.)?({_NAME})\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*")


@dataclass(frozen=True)
class Rule:
    """One parsed rule; ``annotator`` is the annotator whose stat it tests (set by ``resolve``)."""

    stat: str
    op: str
    value: float
    text: str  # normalised, as written to the manifest and the index
    annotator: str = ""

    def passes(self, stats: Mapping[str, float]) -> bool:
        """True if ``stats`` has the stat and it satisfies the rule (a missing or NaN value fails)."""
        value = stats.get(self.stat)
        return value is not None and not math.isnan(value) and OPS[self.op](value, self.value)

    def reason(self, stats: Mapping[str, float]) -> str:
        """The one line recorded for a sample this rule rejects."""
        value = stats.get(self.stat)
        was = "missing" if value is None else f"{value:.6g}"
        return f"filtered: {self.text} (was {was})"


def parse_rule(text: str) -> Rule:
    """``'pose_people>=1'`` -> Rule; a ValueError with one line for anything else."""
    match = _RULE.fullmatch(text)
    try:
        value = float(match.group(4)) if match else math.nan
    except ValueError:
        value = math.nan
    if not match or math.isnan(value):
        raise ValueError(f"bad --filter {text!r}: expected STAT OP NUMBER with OP one of "
                         f"{' '.join(OPS)} (e.g. 'canny_density > 0.01')")  # fmt: skip
    qualifier, stat, op, number = match.groups()
    name = f"{qualifier}.{stat}" if qualifier else stat
    return Rule(stat, op, value, f"{name} {op} {number}", qualifier or "")


def resolve(rules: Iterable[Rule], declared: Mapping[str, Iterable[str]]) -> list[Rule]:
    """Tie each rule to the annotator that emits its stat (``declared``: annotator -> stat names).

    A ValueError with one line names the known stats when a stat is unknown or ambiguous.
    """
    declared = {name: tuple(stats) for name, stats in declared.items()}
    known = "; ".join(f"{n}: {', '.join(s) or '(none)'}" for n, s in declared.items())
    resolved = []
    for rule in rules:
        owners = [n for n, s in declared.items() if rule.stat in s]
        if rule.annotator:
            if rule.annotator not in declared:
                raise ValueError(f"--filter {rule.text!r} names annotator {rule.annotator!r}, "
                                 f"which is not in --annotators (stats: {known})")  # fmt: skip
            owners = [rule.annotator] if rule.annotator in owners else []
        if not owners:
            raise ValueError(f"--filter {rule.text!r}: unknown stat {rule.stat!r}; "
                             f"the chosen annotators emit {known}")  # fmt: skip
        if len(owners) > 1:
            raise ValueError(f"--filter {rule.text!r}: {rule.stat!r} is emitted by "
                             f"{' and '.join(owners)}; write {owners[0]}.{rule.stat}")  # fmt: skip
        resolved.append(Rule(rule.stat, rule.op, rule.value, rule.text, owners[0]))
    return resolved


def parse_filters(texts: Iterable[str], specs: Iterable) -> list[Rule]:
    """Parse and resolve ``--filter`` texts against the annotators of ``specs`` (not loaded)."""
    from annotators import create

    rules = [parse_rule(t) for t in texts]
    if not rules:
        return []
    return resolve(rules, {s.name: create(s.name, **s.params).stats for s in specs})


def rejection(rules: Iterable[Rule], annotator: str, stats: Mapping[str, float]) -> str:
    """The reason of the first of ``annotator``'s rules that ``stats`` fail; '' if all pass."""
    for rule in rules:
        if rule.annotator == annotator and not rule.passes(stats):
            return rule.reason(stats)
    return ""


def rule_of(error: str) -> str:
    """What rejected a filtered sample, without its value: ``pose_people >= 1``,
    ``smaller than --min-size 64``; for counting samples by rule."""
    text = error.removeprefix("filtered: ").rsplit(" (was ", 1)[0]
    return re.sub(r"^\d+x\d+ is ", "", text)


def count_rules(errors: Iterable[str]) -> dict[str, int]:
    """Filtered samples per rule (``rule_of`` their reasons), most first."""
    counts = Counter(rule_of(error or "") for error in errors)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
