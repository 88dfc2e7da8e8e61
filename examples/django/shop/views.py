import json

from django.core.exceptions import BadRequest
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Order
from .tasks import send_receipt


@csrf_exempt
@require_POST
@transaction.atomic  # the order and its task commit together; an exception rolls back both
def create_order(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    order = Order.objects.create(email=data["email"], total=data["total"])
    send_receipt.enqueue(order_id=order.id)  # a GTA row, in this transaction
    if order.total <= 0:
        raise BadRequest("total must be positive")
    return JsonResponse({"id": order.id}, status=201)
