"""Reading optimised HLO text: how often an op runs when the program runs once.

An op inside a loop runs once per iteration. XLA's text names each computation, and a
``while`` names its condition and body; a loop from ``lax.scan`` / ``fori_loop`` counts
from 0 and its condition compares the counter with a constant (``direction=LT``), which
gives its trip count (XLA:CPU also writes it out as ``known_trip_count``).
:func:`executions` multiplies through nested loops, so "host transfers per run" and
"collectives per run" are read from the program itself.
"""

from __future__ import annotations

import collections
import re

_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_WHILE = re.compile(r"\bwhile\(.*?condition=%?([\w.\-]+),\s*body=%?([\w.\-]+)")
_CALLS = re.compile(r"\b(?:calls|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_CONST = re.compile(r"%?([\w.\-]+)\s*=\s*s32\[\][^=]*?constant\((-?\d+)\)")
_LT = re.compile(r"ROOT .*compare\(%?([\w.\-]+),\s*%?([\w.\-]+)\),\s*direction=LT")
_FUSED = re.compile(r"ROOT .*fusion\(%?([\w.\-]+),\s*%?([\w.\-]+)\).*calls=%?([\w.\-]+)")
_KNOWN = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
# A host round trip: a host send/recv (TPU, GPU) or a host-callback custom call (CPU).
HOST_TRANSFER = r"\b(?:send|recv)\(.*is_host_transfer=true|custom_call_target=\"[^\"]*callback"
COLLECTIVE = (r"\b(?:all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)"
              r"(?:-start)?\(")


def computations(hlo: str) -> tuple[dict[str, list[str]], str | None]:
    """``({name: its instruction lines}, the entry computation's name)``."""
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        m = _HEADER.match(line)
        if m:
            current = m.group(2)
            comps[current] = []
            if m.group(1):
                entry = current
        elif current is not None:
            if line.startswith("}"):
                current = None
            else:
                comps[current].append(line)
    return comps, entry


def trip_count(condition: list[str], comps: dict[str, list[str]] | None = None) -> int | None:
    """A counted loop's trip count from its condition: ``counter < constant``, directly
    or through a fusion that wraps the compare (XLA:CPU does)."""
    consts = {m.group(1): int(m.group(2)) for line in condition for m in [_CONST.search(line)]
              if m}
    for line in condition:
        m = _LT.search(line)
        if m and m.group(2) in consts:
            return consts[m.group(2)]
        f = _FUSED.search(line)
        if f and f.group(2) in consts and comps is not None:
            if any(_LT.search(x) for x in comps.get(f.group(3), [])):
                return consts[f.group(2)]
    return None


def multiplicities(hlo: str) -> dict[str, int]:
    """How many times each computation runs per run of the entry (unknown trip counts
    count once)."""
    comps, entry = computations(hlo)
    mult: dict[str, int] = collections.Counter()
    if entry is None:
        return mult

    def visit(name: str, times: int, depth: int = 0) -> None:
        if name not in comps or depth > 64:
            return
        mult[name] += times
        for line in comps[name]:
            w = _WHILE.search(line)
            if w:
                known = _KNOWN.search(line)
                trips = (int(known.group(1)) if known else
                         trip_count(comps.get(w.group(1), []), comps)) or 1
                visit(w.group(1), times * (trips + 1), depth + 1)
                visit(w.group(2), times * trips, depth + 1)
                continue
            for callee in _CALLS.findall(line):
                visit(callee, times, depth + 1)
            b = _BRANCHES.search(line)
            if b:
                for callee in re.findall(r"%?([\w.\-]+)", b.group(1)):
                    visit(callee, times, depth + 1)

    visit(entry, 1)
    return mult


def executions(hlo: str, pattern: str) -> int:
    """Times an instruction matching ``pattern`` runs per run of the program."""
    comps, _ = computations(hlo)
    regex = re.compile(pattern)
    return sum(times * sum(1 for line in comps.get(name, []) if regex.search(line))
               for name, times in multiplicities(hlo).items())


def static_count(hlo: str, pattern: str) -> int:
    """Instructions matching ``pattern`` anywhere in the program text."""
    return len(re.findall(pattern, hlo, flags=re.MULTILINE))
