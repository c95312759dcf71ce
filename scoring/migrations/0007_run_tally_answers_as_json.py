"""A run tally's answer counts as JSON, so that PostgreSQL reads one criterion's counts
without parsing the whole text for every run (the stored text is already valid JSON)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('scoring', '0006_llm_judge'),
    ]

    operations = [
        migrations.AlterField(
            model_name='runtally',
            name='answers',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
