from django.urls import path

from . import views

urlpatterns = [
    path("product/<str:product_id>", views.product),
    path("product-async/<str:product_id>", views.product_async),
    path("dashboard", views.dashboard),
    path("dashboard-async", views.dashboard_async),
]
