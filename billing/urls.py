from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("ledger/", views.ledger, name="ledger"),
    path("statements/", views.statements, name="statements"),
    path("statements/<int:year>/<int:month>/", views.statement, name="statement"),
    path("statements/<int:year>/<int:month>/csv/", views.statement_csv, name="statement-csv"),
    path("topup/", views.topup, name="topup"),
    path("topup/<uuid:pk>/", views.topup_detail, name="topup-detail"),
    path("subscriptions/", views.subscriptions, name="subscriptions"),
    path("subscriptions/<uuid:pk>/", views.subscription_detail, name="subscription-detail"),
    path("accounts/", views.accounts, name="accounts"),
    path("accounts/<uuid:org_id>/credit/", views.account_credit, name="account-credit"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe-webhook"),
]
