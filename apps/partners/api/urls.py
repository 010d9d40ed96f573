# Partner-owned endpoints (webhook endpoints, events) arrive with SPEC §10.
urlpatterns: list = []
