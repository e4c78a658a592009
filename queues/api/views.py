"""Services (staff), and the calling user's tasks and subtasks (see OwnerScopedMixin for who sees what)."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from common.api.schema import conflict
from common.api.scoping import PARSERS, OwnerScopedMixin
from queues.api import serializers
from queues.api.filters import EmailServiceFilter, SubTaskFilter, TaskFilter
from queues.models import EmailService, SendAttempt, SubTask, Task, TaskWaitMetric
from queues.services import (
    service_delete,
    service_reset_quota,
    service_set_enabled,
    task_cancel,
    task_create,
    task_delete,
    task_pause,
    task_resume,
    task_retry_failed,
    task_update,
)

_SERVICE_ACTION = extend_schema(request=None, responses={200: serializers.EmailServiceSerializer})
_TASK_STATE = conflict("The task's status does not allow this.")
_REPLACE = (
    "PUT replaces the service: every writable field must be given (a missing one is a 400 and nothing changes), "
    "except `password` and `backend_options`, which are kept when left out. PATCH changes only the fields it "
    "holds. A field the body may not hold (unknown, read-only, or `is_enabled` after creation) is a 400."
)


@extend_schema_view(
    destroy=extend_schema(
        summary="Delete a service that never sent (one with history can only be disabled)",
        responses={204: None, 409: conflict("The service has sent mail, or mail is being sent through it.")},
    ),
    update=extend_schema(summary="Replace a service", description=_REPLACE),
    partial_update=extend_schema(summary="Change some of a service's fields", description=_REPLACE),
)
class EmailServiceViewSet(viewsets.ModelViewSet):
    """Sending accounts: staff only, for every operation including reads."""

    permission_classes = [IsAdminUser]
    parser_classes = PARSERS
    queryset = EmailService.objects.all()
    serializer_class = serializers.EmailServiceSerializer
    filterset_class = EmailServiceFilter
    ordering_fields = ["name", "created_at", "daily_quota", "used_quota", "next_available_at", "total_sent"]
    ordering = ["name"]

    def perform_create(self, serializer: serializers.EmailServiceSerializer) -> None:
        self._save_unique(serializer)

    def perform_update(self, serializer: serializers.EmailServiceSerializer) -> None:
        self._save_unique(serializer)

    @staticmethod
    def _save_unique(serializer: serializers.EmailServiceSerializer) -> None:
        # The serializer checks the name first; two requests with one new name
        # can still both pass that check, and the database's unique index decides.
        try:
            with transaction.atomic():
                serializer.save()
        except IntegrityError:
            name = serializer.validated_data.get("name")
            raise exceptions.ValidationError({"name": [f"a service named {name!r} already exists"]}) from None

    def perform_destroy(self, instance: EmailService) -> None:
        service_delete(service=instance)

    @_SERVICE_ACTION
    @action(detail=True, methods=["post"], filter_backends=[], pagination_class=None)
    def enable(self, request: Request, pk: str | None = None) -> Response:
        service_set_enabled(service=self.get_object(), enabled=True)
        return self._fresh()

    @_SERVICE_ACTION
    @action(detail=True, methods=["post"], filter_backends=[], pagination_class=None)
    def disable(self, request: Request, pk: str | None = None) -> Response:
        service_set_enabled(service=self.get_object(), enabled=False)
        return self._fresh()

    @_SERVICE_ACTION
    @action(detail=True, methods=["post"], url_path="reset-quota", filter_backends=[], pagination_class=None)
    def reset_quota(self, request: Request, pk: str | None = None) -> Response:
        service_reset_quota(service=self.get_object())
        return self._fresh()

    def _fresh(self) -> Response:
        return Response(self.get_serializer(self.get_object()).data)


_TASK_ACTION = {"detail": True, "methods": ["post"], "filter_backends": [], "pagination_class": None}


@extend_schema_view(
    list=extend_schema(summary="Your tasks, with progress and wait time"),
    retrieve=extend_schema(summary="One of your tasks, with progress and wait time"),
)
class TaskViewSet(
    OwnerScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Create and follow sending tasks; status changes only through the actions.

    PATCH edits it through task_update: the content while the task is pending,
    paused or failed, the schedule and priority while it has mail to send.
    A delete cancels the task and removes it with its subtasks and their
    history; it is refused (409) while its mail is being sent.
    """

    queryset = Task.objects.prefetch_related(
        Prefetch("wait_metrics", queryset=TaskWaitMetric.objects.order_by("-queue_entry_time"))
    )
    serializer_class = serializers.TaskSerializer
    filterset_class = TaskFilter
    ordering_fields = ["created_at", "updated_at", "priority", "scheduled_at", "name", "status"]
    ordering = ["-created_at"]

    @extend_schema(
        summary="Create a task for a recipient list or one of your tags, and queue it",
        description=(
            "Validated at once: bad input is a 400 and creates nothing. A task of up to 1,000 recipients is "
            "expanded into subtasks before the answer and comes back `pending`; a larger one comes back "
            "`preparing` and is expanded in the background (`recipients_prepared` of `recipients_total`), "
            "then becomes `pending` by itself. Nothing of a task is sent while it is preparing."
        ),
        request=serializers.TaskCreateSerializer,
        responses={201: serializers.TaskSerializer},
    )
    def create(self, request: Request) -> Response:
        payload = serializers.TaskCreateSerializer(data=request.data, context=self.get_serializer_context())
        payload.is_valid(raise_exception=True)
        task = task_create(owner=request.user, **payload.validated_data)
        return Response(self.get_serializer(self._reload(task)).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a task's content, schedule or priority",
        description=(
            "Checked as a new task is (bad values: 400, nothing changed); a field its status does not let "
            "change is a 409. Every variable a template reads must exist (`contact.first_name`, "
            "`contact.<attribute>`, `unsubscribe_url` ...): an unknown one is a 400 naming it."
        ),
        request=serializers.TaskUpdateSerializer,
        responses={200: serializers.TaskSerializer, 409: _TASK_STATE},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        payload = serializers.TaskUpdateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        task = task_update(task=self.get_object(), **payload.validated_data)
        return Response(self.get_serializer(self._reload(task)).data)

    @extend_schema(
        summary="Stop new sends; sends under way finish",
        request=None,
        responses={200: serializers.TaskSerializer, 409: _TASK_STATE},
    )
    @action(**_TASK_ACTION)
    def pause(self, request: Request, pk: str | None = None) -> Response:
        task = task_pause(task=self.get_object())
        return Response(self.get_serializer(self._reload(task)).data)

    @extend_schema(
        summary="Continue a paused task", request=None, responses={200: serializers.TaskSerializer, 409: _TASK_STATE}
    )
    @action(**_TASK_ACTION)
    def resume(self, request: Request, pk: str | None = None) -> Response:
        task = task_resume(task=self.get_object())
        return Response(self.get_serializer(self._reload(task)).data)

    @extend_schema(
        summary="Cancel the task and its pending subtasks",
        request=None,
        responses={200: serializers.TaskCancelResultSerializer, 409: _TASK_STATE},
    )
    @action(**_TASK_ACTION)
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        cancelled = task_cancel(task=task)
        return Response({"cancelled": cancelled, "task": self.get_serializer(self._reload(task)).data})

    @extend_schema(
        summary="Queue the task's failed subtasks again",
        request=None,
        responses={200: serializers.TaskRetryResultSerializer, 409: _TASK_STATE},
    )
    @action(**_TASK_ACTION, url_path="retry-failed")
    def retry_failed(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        retried = task_retry_failed(task=task)
        return Response({"retried": retried, "task": self.get_serializer(self._reload(task)).data})

    @extend_schema(
        summary="Delete a task with its subtasks and history (409 while its mail is being sent)",
        responses={204: None, 409: _TASK_STATE},
    )
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        return super().destroy(request, pk=pk)

    def perform_destroy(self, instance: Task) -> None:
        task_delete(task=instance)

    def _reload(self, task: Task) -> Task:
        return self.get_queryset().get(pk=task.pk)


@extend_schema_view(
    list=extend_schema(summary="Your subtasks (one per recipient), with their send attempts"),
    retrieve=extend_schema(summary="One of your subtasks, with its send attempts"),
)
class SubTaskViewSet(OwnerScopedMixin, viewsets.ReadOnlyModelViewSet):
    """The recipients of your tasks and every attempt to send to them; read-only."""

    queryset = SubTask.objects.prefetch_related(
        Prefetch("attempts_log", queryset=SendAttempt.objects.select_related("service").order_by("started_at"))
    )
    serializer_class = serializers.SubTaskSerializer
    filterset_class = SubTaskFilter
    ordering_fields = ["created_at", "updated_at", "status", "recipient_email", "sent_at", "attempts"]
    ordering = ["created_at", "id"]
