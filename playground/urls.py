from django.urls import path

from playground import views

app_name = "playground"

urlpatterns = [
    path("", views.index, name="index"),
    path("code/", views.code, name="code"),
    path("conversations/", views.conversation_list, name="conversations"),
    path("c/<uuid:pk>/", views.conversation, name="conversation"),
    path("c/<uuid:pk>/rename/", views.conversation_rename, name="conversation-rename"),
    path("c/<uuid:pk>/delete/", views.conversation_delete, name="conversation-delete"),
]
