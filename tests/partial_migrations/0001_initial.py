"""A demo app migration that creates ExampleTask only: the other demo models "have no migration"
(tests/unit/test_checks.py points MIGRATION_MODULES here)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="ExampleTask",
            fields=[("id", models.BigAutoField(primary_key=True, serialize=False))],
        ),
    ]
