from django.urls import path

from users.apis import TokenObtainApi, UserDetailApi, UserListCreateApi, UserMeApi

urlpatterns = [
    path("auth/token/", TokenObtainApi.as_view(), name="auth-token"),
    path("users/", UserListCreateApi.as_view(), name="user-list"),
    path("users/me/", UserMeApi.as_view(), name="user-me"),
    path("users/<int:user_id>/", UserDetailApi.as_view(), name="user-detail"),
]
