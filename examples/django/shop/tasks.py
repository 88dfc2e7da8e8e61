"""The shop's Django task, run by GTA's workers through `gta_core.contrib.django.GTABackend`."""
try:
    from django.tasks import task  # Django 6
except ImportError:
    from django_tasks import task  # Django 5.2 with the django-tasks backport

from examples.receipts import write_receipt

from .models import Order


@task()
def send_receipt(order_id: int) -> None:
    write_receipt(Order.objects.get(id=order_id).id)
