"""Per-run review tallies and pairwise vote tallies for the leaderboards, counted from the
reviews, adjudications and votes already stored."""

import django.db.models.deletion
from django.db import migrations, models


def count_existing(apps, schema_editor):
    """Tally what is already stored. This calls today's recount (scoring.models), which reads
    only tables that exist at this point; a later migration that changes them must recount
    itself rather than lean on this one."""
    Review = apps.get_model("scoring", "Review")
    Comparison = apps.get_model("scoring", "Comparison")
    Adjudication = apps.get_model("scoring", "Adjudication")
    if Review.objects.exists() or Comparison.objects.exists() or Adjudication.objects.exists():
        from scoring.models import rebuild_aggregates

        rebuild_aggregates()


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0006_harness_registry'),
        ('scoring', '0004_review_queue'),
    ]

    operations = [
        migrations.CreateModel(
            name='RunTally',
            fields=[
                ('run', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='tally', serialize=False, to='runs.run')),
                ('reviews', models.PositiveIntegerField(default=0)),
                ('yes', models.PositiveIntegerField(default=0)),
                ('small_changes', models.PositiveIntegerField(default=0)),
                ('no', models.PositiveIntegerField(default=0)),
                ('adjudicated', models.CharField(blank=True, default='', max_length=20)),
                ('verdicts', models.TextField(blank=True, default='')),
                ('answers', models.TextField(blank=True, default='{}')),
                ('acceptance_criteria', models.PositiveIntegerField(default=0)),
                ('acceptance_ticked', models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name='VoteTally',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('outcome', models.CharField(choices=[('a', 'A is better'), ('b', 'B is better'), ('tie', 'Tie'), ('both_bad', 'Both bad')], max_length=20)),
                ('votes', models.PositiveIntegerField(default=0)),
                ('campaign_a', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.campaign')),
                ('campaign_b', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.campaign')),
                ('contestant_a', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.contestant')),
                ('contestant_b', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.contestant')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('campaign_a', 'campaign_b', 'contestant_a', 'contestant_b', 'outcome'), name='one_vote_tally_per_cell')],
            },
        ),
        migrations.RunPython(count_existing, migrations.RunPython.noop),
    ]
