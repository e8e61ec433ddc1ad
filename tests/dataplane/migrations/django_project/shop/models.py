from __future__ import annotations

from django.db import models


class Order(models.Model):
    reference = models.CharField(max_length=32, unique=True)
    total_cents = models.PositiveIntegerField(default=0)
    placed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["placed_at"], name="shop_order_placed_at_idx")]  # noqa: RUF012
