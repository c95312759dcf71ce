"""The demo a newcomer sees after `make run`: a real repository and runs through the real engine."""

from __future__ import annotations

from runs import demo, execution
from runs.models import Campaign, Contestant, PromptSet, Run

# The runs whose scripted behaviour the demo exists to show; the other six are scripted the same
# way and go through the same engine, so the test runs these four for real and records the rest.
SHOWN = {
    ("fix-quantity-total", "careful-agent"),
    ("fix-quantity-total", "hasty-agent"),
    ("free-shipping", "careful-agent"),
    ("free-shipping", "hasty-agent"),
}


def test_it_builds_the_demo_through_the_real_engine_once(db, settings, tmp_path, monkeypatch):
    settings.MERGEABLE_LOCAL_REPO_ROOTS = [tmp_path / "demo-repos"]
    real_execute, handed_over = execution.execute, []

    def execute(run_id: int) -> None:
        handed_over.append(run_id)
        run = Run.objects.select_related("prompt", "contestant").get(pk=run_id)
        if (run.prompt.key, run.contestant.name) in SHOWN:
            real_execute(run_id)

    monkeypatch.setattr(execution, "execute", execute)
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
    assert sorted(handed_over) == sorted(r.pk for r in runs.values())  # every run, once
    # The scripted contestants behave as their scripts say, on a real checkout with real tests.
    careful_fix = runs[("fix-quantity-total", "careful-agent")]
    assert careful_fix.status == Run.FINISHED and careful_fix.files_changed == ["tinyshop/cart.py"]
    assert careful_fix.tests_failed == 0 and careful_fix.tests_passed == 7
    hasty_fix = runs[("fix-quantity-total", "hasty-agent")]
    assert hasty_fix.files_changed == ["tests/test_cart.py"]  # it "fixed" the test instead
    careful_shipping = runs[("free-shipping", "careful-agent")]
    assert careful_shipping.questions[0]["source"] == "prepared"
    assert runs[("free-shipping", "hasty-agent")].status == Run.FAILED
    shown = [runs[key] for key in SHOWN]
    assert all(r.status in (Run.FINISHED, Run.FAILED) for r in shown)
    assert all(r.transcript["schema_version"] == "ATIF-v1.6" for r in shown)

    again = demo.load()
    assert any("0 created" in line for line in again)
    assert Campaign.objects.count() == 1 and Run.objects.count() == 10
    assert len(handed_over) == 10  # nothing ran twice
