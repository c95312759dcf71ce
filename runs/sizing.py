"""What a campaign's size can tell: the smallest difference in merge rate between two
contestants that it would detect, said when the campaign is launched and on its page.

The standard two-proportion power calculation (two-sided alpha 0.05, power 80%), through
Cohen's arcsine effect size h = 2·asin(√p1) − 2·asin(√p2), which needs n = ((z₁₋α/₂ + z₁₋β) / h)²·2
runs per contestant. Solved for h, it is placed around a 50% merge rate, where the variance
is largest and so the difference widest: the figure is what a campaign can count on.

Repeats of one prompt are not independent trials (the same task is as hard each time), so a
campaign with repeats detects somewhat less than its runs suggest; the sentence says so. The
method is in the README ("How many runs?") and tests/runs/test_sizing.py checks it against a
simulation of the test it stands for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.stats import norm

ALPHA = 0.05
POWER = 0.80


@dataclass(frozen=True)
class Detectable:
    runs: int  # per contestant
    low: float  # merge rates the campaign would tell apart, 80% of the time
    high: float

    @property
    def difference(self) -> float:
        return self.high - self.low


def detectable_difference(runs_per_contestant: int) -> Detectable | None:
    """The smallest merge-rate difference, centred on 50%, that a two-sided test at ALPHA
    detects with POWER from `runs_per_contestant` runs each; None when no difference (not even
    0% against 100%) would be detected that reliably."""
    if runs_per_contestant < 1:
        return None
    z = norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER)
    h = z * math.sqrt(2 / runs_per_contestant)
    if h > math.pi:
        return None
    centre = math.pi / 4  # asin(√0.5)
    low = math.sin(centre - h / 4) ** 2
    high = math.sin(centre + h / 4) ** 2
    return Detectable(runs_per_contestant, low, high)


def size_sentence(prompts: int, repeats: int) -> str:
    """What a campaign of `prompts` × `repeats` runs per contestant can detect, in words."""
    runs = prompts * repeats
    each = f"{runs} run{'s' if runs != 1 else ''} per contestant"
    if repeats > 1:
        each += f" ({prompts} prompts × {repeats} repeats)"
    found = detectable_difference(runs)
    if found is None:
        return (
            f"With {each}, no difference in merge rate would be detected reliably "
            "(80% power, alpha 0.05): add prompts or repeats."
        )
    sentence = (
        f"With {each}, this campaign can detect a difference in merge rate of about "
        f"{round(100 * found.difference)} points (e.g. {round(100 * found.low)}% against "
        f"{round(100 * found.high)}%) at 80% power, alpha 0.05 (two-proportion test)."
    )
    if repeats > 1:
        sentence += " Repeats of a prompt are correlated, so the real figure is somewhat larger."
    return sentence
