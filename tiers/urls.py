from django.urls import path

from tiers import views

urlpatterns = [
    path("", views.my_apps, name="home"),
]
