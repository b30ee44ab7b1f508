import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="AccessRecord",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("time", models.DateTimeField(db_index=True, default=django.utils.timezone.now, help_text="When the request arrived.")),
                ("actor", models.CharField(blank=True, help_text="Username; empty = anonymous.", max_length=150)),
                ("resource", models.CharField(db_index=True, help_text="Resource slug.", max_length=63)),
                ("method", models.CharField(max_length=16)),
                ("path", models.CharField(help_text="Path inside the app, with the query.", max_length=2000)),
                ("status", models.PositiveSmallIntegerField(help_text="Status the browser received.")),
                ("decision", models.CharField(help_text="allow, step_up, deny, isolate, login, mfa, not_found, rate_limited, bad_request, error.", max_length=16)),
                ("bytes_in", models.BigIntegerField(default=0, help_text="Request body bytes sent upstream.")),
                ("bytes_out", models.BigIntegerField(default=0, help_text="Response body bytes sent to the browser.")),
                ("duration_ms", models.FloatField(help_text="From first byte in to last byte out.")),
                ("client_address", models.CharField(blank=True, max_length=45)),
                ("request_id", models.CharField(blank=True, max_length=32)),
            ],
            options={
                "ordering": ["-time", "-id"],
                "indexes": [models.Index(fields=["actor", "time"], name="proxy_acces_actor_7f58a8_idx")],
            },
        ),
    ]
