from django.urls import path

from orders.apis import OrderDetailApi, OrderListCreateApi, OrderStatusApi

urlpatterns = [
    path("orders/", OrderListCreateApi.as_view(), name="order-list"),
    path("orders/<int:order_id>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<int:order_id>/status/", OrderStatusApi.as_view(), name="order-status"),
]
