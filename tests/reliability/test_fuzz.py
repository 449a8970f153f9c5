"""The decoders fuzzed: only their own error may ever come out (see ``fuzz.py``).

A bounded run per target in CI (:data:`INPUTS` mutated inputs, fixed seed, so
a failure reproduces); ``python -m tests.reliability.fuzz --inputs 1000000``
is the long run.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability.figures import figure
from tests.reliability.fuzz import TARGETS, Fuzzer

#: Inputs per target in CI: 8 targets, about 5 s in all on 2 vCPUs.
INPUTS = 12_500


@pytest.mark.parametrize("target", list(TARGETS))
def test_decoder_raises_only_its_own_error(target: str) -> None:
    fuzzer = Fuzzer(seed=1, targets=[target])
    started = time.perf_counter()
    fuzzer.run(INPUTS)
    seconds = time.perf_counter() - started
    figure(
        f"fuzz:{target}",
        "inputs",
        sum(fuzzer.runs.values()),
        "",
        per_second=round(sum(fuzzer.runs.values()) / seconds),
        accepted=fuzzer.accepted[target],
        findings=len(fuzzer.findings),
    )
    assert not fuzzer.findings, "\n".join(f.describe() for f in fuzzer.findings.values())
