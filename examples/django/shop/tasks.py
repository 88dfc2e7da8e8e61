"""The shop's Django task, run by GTA's workers through `gta_core.contrib.django.GTABackend`."""
from django_tasks import task  # Django 6: from django.tasks import task

from examples.receipts import write_receipt

from .models import Order


@task()
def send_receipt(order_id: int) -> None:
    write_receipt(Order.objects.get(id=order_id).id)
