from django.db import models


class Order(models.Model):
    email = models.EmailField()
    total = models.IntegerField()

    class Meta:
        db_table = "example_orders"
