"""Seed the default rubric and give each role group its model permissions.

Roles are checked by group in views; the Django permissions mirror them so that anything built on
Django's permission system (and anyone reading the database) sees the same picture.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

DEFAULT_CRITERIA = [
    (
        "right_files",
        "Found the right files",
        "Did the change touch the files a good change should?",
        "yes_no",
        [],
        "",
    ),
    (
        "clarifying_question",
        "Asked a clarifying question when the spec was ambiguous",
        "Shown only for prompts whose spec is ambiguous on purpose.",
        "yes_no",
        [],
        "ambiguous-spec",
    ),
    (
        "conventions",
        "Followed the codebase's conventions",
        "Naming, structure, error handling, tests: does it look like the rest of the code?",
        "one_to_five",
        [],
        "",
    ),
    (
        "recovered",
        "Recovered when tests failed",
        "When a command or test failed, did the agent notice and fix it?",
        "yes_no",
        [],
        "",
    ),
    (
        "merge",
        "Would you merge this PR?",
        "The verdict.",
        "choices",
        [["yes", "Yes"], ["small_changes", "After small changes"], ["no", "No"]],
        "",
    ),
]

ROLE_PERMISSIONS = {
    "scorer": [
        "runs.view_run",
        "runs.view_prompt",
        "runs.view_campaign",
        "scoring.view_review",
        "scoring.add_review",
        "scoring.change_review",
        "scoring.view_comparison",
        "scoring.add_comparison",
        "scoring.change_comparison",
        "scoring.view_rubric",
        "scoring.view_criterion",
    ],
    "lead": [
        "runs.add_campaign",
        "runs.change_campaign",
        "runs.change_run",
        "runs.view_contestant",
        "runs.view_languagemodel",
        "runs.view_promptset",
        "runs.view_repository",
    ],
    "admin": "all",
}


def create_default_rubric(Rubric, Criterion) -> None:
    """The default rubric, once. Takes the model classes so tests can reseed a flushed database."""
    rubric, created = Rubric.objects.get_or_create(
        name="Default",
        defaults={"description": "Would you merge this PR, and why.", "is_default": True},
    )
    if created:
        for position, (key, label, help_text, scale, choices, tag) in enumerate(DEFAULT_CRITERIA):
            Criterion.objects.create(
                rubric=rubric,
                key=key,
                label=label,
                help=help_text,
                scale=scale,
                choices=choices,
                only_for_tag=tag,
                position=position,
            )


def seed(apps, schema_editor):
    for app_label in ("runs", "scoring"):
        # Permissions are normally created after all migrations; create them now to assign them.
        app_config = apps.get_app_config(app_label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    create_default_rubric(
        apps.get_model("scoring", "Rubric"), apps.get_model("scoring", "Criterion")
    )

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    granted: list = []
    for role in ("scorer", "lead", "admin"):
        group, _ = Group.objects.get_or_create(name=role)
        spec = ROLE_PERMISSIONS[role]
        if spec == "all":
            perms = list(
                Permission.objects.filter(content_type__app_label__in=["runs", "scoring", "auth"])
            )
        else:
            perms = []
            for dotted in spec:
                app_label, codename = dotted.split(".")
                perms.append(
                    Permission.objects.get(content_type__app_label=app_label, codename=codename)
                )
        granted = granted + perms
        group.permissions.add(*(granted if spec != "all" else perms))


class Migration(migrations.Migration):
    dependencies = [
        ("scoring", "0001_initial"),
        ("runs", "0001_initial"),
        ("evalsite", "0001_roles"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
