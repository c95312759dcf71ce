"""The review queue: holds on runs, skipped runs, N/A answers, ticked acceptance criteria."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0004_review_key"),
        ("scoring", "0003_adjudication"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="criterion",
            name="may_not_apply",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="review",
            name="acceptance_met",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="reviewversion",
            name="acceptance_met",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.CreateModel(
            name="ReviewHold",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("held_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("skipped_at", models.DateTimeField(blank=True, null=True)),
                (
                    "reviewer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="review_holds",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="holds",
                        to="runs.run",
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
                "indexes": [
                    models.Index(fields=["run", "held_at"], name="review_hold_run_held_at")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("run", "reviewer"), name="one_hold_per_reviewer"
                    )
                ],
            },
        ),
    ]
