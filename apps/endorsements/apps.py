from django.apps import AppConfig


class EndorsementsConfig(AppConfig):
    name = "apps.endorsements"
    label = "endorsements"
    verbose_name = "Endorsements"

    def ready(self) -> None:
        # The insurers app (a lower layer) asks this one for endorsement states and to apply accepted insurer
        # results of conflicts (issue 8, kind 11).
        from apps.endorsements.conflicts import wire

        wire()
