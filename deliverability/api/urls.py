from rest_framework.routers import SimpleRouter

from deliverability.api.views import SuppressionViewSet

router = SimpleRouter()
router.register("suppressions", SuppressionViewSet, basename="suppression")

urlpatterns = router.urls
