from django.urls import path

from deliverability.api.reputation import ReputationView

urlpatterns = [
    path("deliverability/reputation/", ReputationView.as_view(), name="deliverability-reputation"),
]
