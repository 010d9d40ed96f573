from django.urls import path

from apps.oauth import views

urlpatterns = [
    path("oauth/token", views.token, name="oauth-token"),
    path(".well-known/jwks.json", views.jwks_view, name="oauth-jwks"),
]
