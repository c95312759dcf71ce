"""Give every run an opaque review key (review URLs stop using the sequential id), and let a lead
ask for more reviews of one run than its campaign wants.

A unique field with a random default cannot be added in one step: Django would compute the
default once and give every existing run the same key. So the column is added nullable, filled
run by run, then made unique.
"""

from django.db import migrations, models

import runs.models


def fill_review_keys(apps, schema_editor):
    Run = apps.get_model("runs", "Run")
    for run in Run.objects.filter(review_key__isnull=True).only("pk").iterator():
        Run.objects.filter(pk=run.pk).update(review_key=runs.models.new_review_key())


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0003_sandbox_gateway"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="review_key",
            # No index yet: the unique field below makes its own, and a SlugField's default index
            # would leave PostgreSQL a second "_like" index of the same name to create.
            field=models.SlugField(db_index=False, editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(fill_review_keys, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="run",
            name="review_key",
            field=models.SlugField(
                default=runs.models.new_review_key, editable=False, max_length=32, unique=True
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="extra_reviews_wanted",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
