"""The web server's master warms Django up before it forks its workers (evalsite/gunicorn_config.py
`warm_up`): the pages a restart's first logins ask for are served without compiling a template."""

from __future__ import annotations

import pytest
from django.template import engines
from django.template.base import Template
from django.urls import reverse

from evalsite.gunicorn_config import warm_up
from tests.scoring.test_review import make_run


@pytest.fixture
def cold_templates():
    """The template cache as a newly started process has it: empty."""
    loader = engines["django"].engine.template_loaders[0]
    loader.reset()
    yield
    loader.reset()


@pytest.fixture
def no_compiling(monkeypatch):
    compiled = []
    original = Template.compile_nodelist

    def compile_nodelist(self):
        compiled.append(self.origin.template_name)
        return original(self)

    monkeypatch.setattr(Template, "compile_nodelist", compile_nodelist)
    return compiled


def test_a_cold_process_compiles_the_templates_of_the_first_pages_it_serves(
    cold_templates, no_compiling, client
):
    # The measure the next test relies on: without the warm-up, the login page compiles.
    assert client.get(reverse("login")).status_code == 200
    assert "registration/login.html" in no_compiling


def test_after_the_warm_up_the_first_pages_compile_nothing(
    cold_templates, no_compiling, scorer, client_for, client
):
    warm_up()
    assert "registration/login.html" in no_compiling  # the warm-up compiled it
    no_compiling.clear()
    run = make_run()

    assert client.get(reverse("login")).status_code == 200
    scoring = client_for(scorer)
    assert scoring.get(reverse("dashboard")).status_code == 200
    page = scoring.get(reverse("scoring:review", kwargs={"review_key": run.review_key}))
    assert page.status_code == 200
    assert no_compiling == []
