"""What a campaign's size can detect: the sentence on the launch and campaign pages, and the
power calculation behind it checked against a seeded simulation of the test."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse
from scipy.stats import norm

from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository
from runs.sizing import detectable_difference, size_sentence


def _power(p_low: float, p_high: float, n: int, seed: int, trials: int = 20_000) -> float:
    """How often a pooled two-proportion z-test at alpha 0.05 tells the rates apart."""
    rng = np.random.default_rng(seed)
    a = rng.binomial(n, p_high, trials) / n
    b = rng.binomial(n, p_low, trials) / n
    pooled = (a + b) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (a - b) / np.sqrt(pooled * (1 - pooled) * 2 / n)
    return float(np.mean(np.abs(np.nan_to_num(z)) > norm.ppf(0.975)))


@pytest.mark.parametrize("runs", [30, 60, 120, 400])
def test_it_detects_its_difference_80_percent_of_the_time(runs):
    found = detectable_difference(runs)

    assert found is not None
    assert abs(found.low + found.high - 1) < 1e-9  # centred on 50%
    assert abs(_power(found.low, found.high, runs, seed=runs) - 0.80) < 0.04


def test_it_shrinks_with_size():
    assert detectable_difference(20).difference > detectable_difference(80).difference


def test_it_says_when_nothing_is_detectable():
    assert detectable_difference(1) is None
    assert "no difference in merge rate would be detected" in size_sentence(1, 1)


def test_it_mentions_repeats():
    sentence = size_sentence(10, 2)
    assert sentence.startswith("With 20 runs per contestant (10 prompts × 2 repeats)")
    assert "Repeats of a prompt are correlated" in sentence


def test_it_is_on_the_campaign_page_and_the_launch_page(client_for, lead):
    repo = Repository.objects.create(name="shop", url="https://git.example.com/shop.git")
    prompt_set = PromptSet.objects.create(name="backend")
    for index in range(5):
        Prompt.objects.create(
            prompt_set=prompt_set, key=f"p{index}", title="t", instructions="Do it",
            repository=repo, commit="a" * 40,
        )  # fmt: skip
    model = LanguageModel.objects.create(name="m", provider="scripted", script="- text: hi\n")
    campaign = Campaign.objects.create(name="March", prompt_set=prompt_set, repeats=2)
    campaign.contestants.set([Contestant.objects.create(name="alpha", model=model)])
    client = client_for(lead)

    detail = client.get(reverse("runs:campaign", args=[campaign.pk])).content.decode()
    launch = client.get(reverse("runs:campaign_create")).content.decode()

    assert "With 10 runs per contestant (5 prompts × 2 repeats), this campaign can detect" in detail
    assert "backend" in launch and "can detect a difference in merge rate of about" in launch
