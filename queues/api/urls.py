from rest_framework.routers import SimpleRouter

from queues.api.views import EmailServiceViewSet, SubTaskViewSet, TaskViewSet

router = SimpleRouter()
router.register("services", EmailServiceViewSet, basename="service")
router.register("tasks", TaskViewSet, basename="task")
router.register("subtasks", SubTaskViewSet, basename="subtask")

urlpatterns = router.urls
