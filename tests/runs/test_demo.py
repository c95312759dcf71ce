"""The demo a newcomer sees after `make run`: a real repository and runs through the real engine."""

from __future__ import annotations

from runs import demo
from runs.models import Campaign, Contestant, PromptSet, Run


def test_it_builds_the_demo_through_the_real_engine_once(db, settings, tmp_path):
    settings.MERGEABLE_LOCAL_REPO_ROOTS = [tmp_path / "demo-repos"]
    lines = demo.load()
    assert any("Demo campaign ran" in line for line in lines)
    prompt_set = PromptSet.objects.get(name=demo.PROMPT_SET_NAME)
    assert prompt_set.prompts.count() == 5
    assert {c.label for c in Contestant.objects.all()} == {
        "careful-agent (scripted)",
        "hasty-agent (scripted)",
    }
    runs = {
        (r.prompt.key, r.contestant.name): r
        for r in Run.objects.select_related("prompt", "contestant")
    }
    assert len(runs) == 10
    # The scripted contestants behave as their scripts say, on a real checkout with real tests.
    careful_fix = runs[("fix-quantity-total", "careful-agent")]
    assert careful_fix.status == Run.FINISHED and careful_fix.files_changed == ["tinyshop/cart.py"]
    assert careful_fix.tests_failed == 0 and careful_fix.tests_passed == 7
    hasty_fix = runs[("fix-quantity-total", "hasty-agent")]
    assert hasty_fix.files_changed == ["tests/test_cart.py"]  # it "fixed" the test instead
    careful_shipping = runs[("free-shipping", "careful-agent")]
    assert careful_shipping.questions[0]["source"] == "prepared"
    assert runs[("free-shipping", "hasty-agent")].status == Run.FAILED
    assert all(r.status in (Run.FINISHED, Run.FAILED) for r in runs.values())
    assert all(r.transcript["schema_version"] == "ATIF-v1.4" for r in runs.values())

    again = demo.load()
    assert any("0 created" in line for line in again)
    assert Campaign.objects.count() == 1 and Run.objects.count() == 10
