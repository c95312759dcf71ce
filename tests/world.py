"""One of every curated and produced object, for tests that walk every URL."""

from __future__ import annotations

from django.utils import timezone

from api.models import ApiToken, Series
from runs.models import (
    Campaign,
    Contestant,
    LanguageModel,
    Prompt,
    PromptDraft,
    PromptSet,
    Repository,
    Run,
    RunImport,
)
from scoring.models import Comparison, Judge, Review, Rubric


def build_world(owner) -> dict:
    repo = Repository.objects.create(name="shop", url="https://git.example.com/shop.git")
    prompt_set = PromptSet.objects.create(name="backend", description="Real tasks")
    prompt = Prompt.objects.create(
        prompt_set=prompt_set,
        key="refunds",
        title="Add refunds",
        instructions="Do it",
        repository=repo,
        commit="a" * 40,
        tags=["multi-file"],
        expected_files=["a.py"],
        test_command="true",
    )
    model = LanguageModel.objects.create(
        name="demo-model", provider="scripted", script="- text: hi\n"
    )
    contestants = [
        Contestant.objects.create(name="alpha", model=model),
        Contestant.objects.create(name="beta", model=model),
    ]
    campaign = Campaign.objects.create(name="First", prompt_set=prompt_set, created_by=owner)
    campaign.contestants.set(contestants)
    now = timezone.now()
    runs = [
        Run.objects.create(
            campaign=campaign,
            prompt=prompt,
            contestant=c,
            status=Run.FINISHED,
            snapshot={"prompt": prompt.snapshot(), "contestant": c.snapshot()},
            started_at=now,
            finished_at=now,
        )
        for c in contestants
    ]
    review = Review.objects.create(run=runs[0], reviewer=owner, verdict="yes", submitted_at=now)
    comparison = Comparison.objects.create(
        prompt=prompt, run_a=runs[0], run_b=runs[1], reviewer=owner
    )
    return {
        "repository": repo,
        "prompt_set": prompt_set,
        "prompt": prompt,
        "model": model,
        "contestant": contestants[0],
        "campaign": campaign,
        "run": runs[0],
        "runs": runs,
        "review": review,
        "comparison": comparison,
        "import": RunImport.objects.create(prompt=prompt, contestant_name="aider-laptop"),
        "draft": PromptDraft.objects.create(
            repository=repo, commit="b" * 40, parent="a" * 40, subject="Fix", title="Fix"
        ),
        "rubric": Rubric.default(),
        "user": owner,
        # api: a token of whoever visits is looked up per user, so any id will do for the matrix.
        "token": ApiToken.objects.create(user=owner, name="ci", prefix="0000abcd", digest="0"),
        "series": Series.objects.create(name="First", template=campaign),
        "judge": Judge.objects.create(campaign=campaign, model=model),
    }


# URL keyword argument -> the world object whose primary key fills it.
# (review_key is the one that is not a primary key: see kwarg_value.)
KWARG_OBJECTS = {
    "repository_id": "repository",
    "prompt_set_id": "prompt_set",
    "prompt_id": "prompt",
    "model_id": "model",
    "contestant_id": "contestant",
    "campaign_id": "campaign",
    "run_id": "run",
    "import_id": "import",
    "draft_id": "draft",
    "review_id": "review",
    "comparison_id": "comparison",
    "rubric_id": "rubric",
    "user_id": "user",
    "token_id": "token",
    "series_id": "series",
    "judge_id": "judge",
}


def kwarg_value(world: dict, name: str):
    """The value of URL keyword argument ``name`` for the world's objects."""
    if name == "review_key":
        return world["run"].review_key
    if name == "invite_token":  # an open invite: its page is public
        from evalsite.accounts import create_invite  # noqa: PLC0415 - only this URL needs it

        return create_invite("scorer", 1, None)[1]
    return world[KWARG_OBJECTS[name]].pk
