"""Tokens for the named users of tests/conftest.py, and a client that sends them."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from api import tokens
from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository


class ApiClient:
    """Django's test client with a token, and JSON bodies by default."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **params):
        return self.client.get(path, params, headers=self.headers)

    def post(self, path: str, data=None, *, content_type="application/json"):
        if content_type == "application/json":
            data = json.dumps(data or {})
        if content_type is None:  # multipart
            return self.client.post(path, data, headers=self.headers)
        return self.client.post(path, data, content_type=content_type, headers=self.headers)

    def put(self, path: str, data=None):
        return self.client.put(
            path, json.dumps(data or {}), content_type="application/json", headers=self.headers
        )

    def delete(self, path: str):
        return self.client.delete(path, headers=self.headers)

    def request(self, method: str, path: str, data=None, content_type="application/json"):
        if method == "GET":
            return self.get(path, **(data or {}))
        if method == "PUT":
            return self.put(path, data)
        if method == "DELETE":
            return self.delete(path)
        return self.post(path, data, content_type=content_type)


@pytest.fixture
def api_as():
    """api_as(user) -> an ApiClient with a fresh token of `user` (None: no token at all)."""

    def make(user) -> ApiClient:
        if user is None:
            return ApiClient(None)
        _row, token = tokens.create(user, "test")
        return ApiClient(token)

    return make


@pytest.fixture
def curated(db, lead):
    """A prompt set with two prompts, two scripted contestants, and a campaign of them."""
    repo = Repository.objects.create(name="shop", url="https://git.example.com/shop.git")
    prompt_set = PromptSet.objects.create(name="backend")
    for position, key in enumerate(("refunds", "invoices")):
        Prompt.objects.create(
            prompt_set=prompt_set,
            key=key,
            title=key.title(),
            instructions="Do it",
            repository=repo,
            commit="a" * 40,
            position=position,
        )
    model = LanguageModel.objects.create(name="model-a", provider="scripted", script="- text: hi\n")
    other = LanguageModel.objects.create(
        name="model-b", provider="openai", base_url="http://127.0.0.1:9/v1", model_id="b",
        api_key="sk-live-secret-key-0123456789",
    )  # fmt: skip
    contestants = [
        Contestant.objects.create(name="alpha", model=model, max_steps=7, options={"x": 1}),
        Contestant.objects.create(name="beta", model=model),
    ]
    campaign = Campaign.objects.create(
        name="Nightly", prompt_set=prompt_set, repeats=2, reviews_wanted=3, created_by=lead
    )
    campaign.contestants.set(contestants)
    return {
        "prompt_set": prompt_set,
        "model": model,
        "other_model": other,
        "contestants": contestants,
        "campaign": campaign,
    }
