from django.urls import path

from config.api.views import ConfigChangeListView, SettingDetailView, SettingListView

urlpatterns = [
    path("config/", SettingListView.as_view(), name="config-list"),
    path("config/changes/", ConfigChangeListView.as_view(), name="config-changes"),
    path("config/<str:category>/<str:key>/", SettingDetailView.as_view(), name="config-detail"),
]
