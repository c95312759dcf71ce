"""A lead's final verdict on a disputed run, and what "after small changes" is worth per rubric.

Leads get the adjudication permissions (admins get them all), as 0002 did for the other models.
"""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

ROLE_PERMISSIONS = {
    "lead": ["view_adjudication", "add_adjudication", "change_adjudication"],
    "admin": [
        "view_adjudication",
        "add_adjudication",
        "change_adjudication",
        "delete_adjudication",
    ],
}


def grant(apps, schema_editor):
    # Permissions are normally created after all migrations; create them now to assign them.
    app_config = apps.get_app_config("scoring")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codenames in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(
            *Permission.objects.filter(content_type__app_label="scoring", codename__in=codenames)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0003_sandbox_gateway"),
        ("scoring", "0002_default_rubric_and_role_permissions"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="rubric",
            name="small_changes_value",
            field=models.FloatField(
                default=0.5,
                help_text="How much of a merge that verdict is worth on the leaderboard, from 0 (as good as no) to 1 (as good as yes).",
                validators=[
                    django.core.validators.MinValueValidator(0.0),
                    django.core.validators.MaxValueValidator(1.0),
                ],
                verbose_name='"After small changes" counts as',
            ),
        ),
        migrations.CreateModel(
            name="Adjudication",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "verdict",
                    models.CharField(
                        choices=[
                            ("yes", "Yes, merge it"),
                            ("small_changes", "After small changes"),
                            ("no", "No"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "note",
                    models.TextField(help_text="Why: the reviewers who disagreed will read it."),
                ),
                ("decided_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "decided_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "run",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="adjudication",
                        to="runs.run",
                    ),
                ),
            ],
            options={
                "ordering": ["-decided_at", "-id"],
            },
        ),
        migrations.RunPython(grant, migrations.RunPython.noop),
    ]
