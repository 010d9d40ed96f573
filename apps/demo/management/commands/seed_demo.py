from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from apps.common.actors import Actor
from apps.demo.loans import seed_demo_loans
from apps.employers.models import Employer, Policy
from apps.employers.services import employer_create, policy_create
from apps.insurers.models import InsurerProtocol
from apps.insurers.sandbox.setup import sandbox_addresses_repair, sandbox_register
from apps.ledger.services import topup_post
from apps.partners.models import Partner
from apps.partners.services import partner_create

DEMO_PARTNER = "demo-partner"
SANDBOX_INSURERS = [
    ("sandbox-rest", "Sandbox Insurer (REST)", InsurerProtocol.REST),
    ("sandbox-soap", "Sandbox Insurer (SOAP)", InsurerProtocol.SOAP),
    ("sandbox-file", "Sandbox Insurer (files)", InsurerProtocol.FILE),
]
DEMO_EMPLOYERS = [
    ("DEMO-ACME", "Acme Manufacturing", "hr@acme.example"),
    ("DEMO-GLOBEX", "Globex Services", "people@globex.example"),
    ("DEMO-INITECH", "Initech Software", "benefits@initech.example"),
]


class Command(BaseCommand):
    help = (
        "Load demo data (idempotent): the sandbox insurers, a demo partner with employers, policies and funded "
        "endorsement accounts, and one loan application of each outcome (the API key: `manage.py demo_key`)."
    )

    # long: the seed as one list of steps read top to bottom (sandbox insurers, partner, employers, policies,
    # loans) and then what it printed for the reader.
    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("manage.py seed_demo")
        with transaction.atomic():
            # The REST and SOAP sandboxes are routes of this app: their endpoints and callbacks point at
            # KEEL_BASE_URL (derived from KEEL_PORT), and an address stored by an earlier run on another port is
            # repaired (ADR 0019). The file sandbox's folders are under var/insurers/, answered by the
            # `insurers.sandbox_files` beat job.
            repaired = sandbox_addresses_repair(base_url=settings.KEEL_BASE_URL)
            sandboxes = sandbox_register(
                base_url=settings.KEEL_BASE_URL, codes=tuple(code for code, _, _ in SANDBOX_INSURERS)
            )
            partner = Partner.objects.filter(name=DEMO_PARTNER).first() or partner_create(
                name=DEMO_PARTNER, actor=actor
            )
            today = timezone.localdate()
            # Every demo employer has a REST policy (GMC-<ref>); GLOBEX also has one on the SOAP sandbox and
            # INITECH one on the file sandbox (GMC-<ref>-SOAP / -FILE), so each protocol can be tried at once.
            rest, *others = sandboxes
            extra = dict(zip((ref for ref, _, _ in DEMO_EMPLOYERS[1:]), others, strict=True))
            for ref, name, email in DEMO_EMPLOYERS:
                employer = Employer.objects.filter(partner=partner, external_ref=ref).first()
                if employer is None:
                    employer = employer_create(
                        partner_id=partner.pk,
                        name=name,
                        external_ref=ref,
                        contact_email=email,
                        low_balance_threshold=50_000_00,
                        actor=actor,
                    )
                wanted = [(rest, f"GMC-{ref}")]
                if ref in extra:
                    wanted.append((extra[ref], f"GMC-{ref}-{extra[ref].protocol.upper()}"))
                for sandbox, number in wanted:
                    if not Policy.objects.filter(insurer=sandbox, policy_number=number).exists():
                        policy_create(
                            employer=employer,
                            insurer_code=sandbox.code,
                            policy_number=number,
                            start_date=today - timedelta(days=30),
                            end_date=today + timedelta(days=334),
                            premium_rate_per_mille=Decimal("4.5"),
                            default_sum_insured=500_000_00,
                            actor=actor,
                        )
                # Idempotent by reference: running seed_demo again posts nothing.
                topup_post(employer_id=employer.pk, amount=5_00_000_00, reference=f"seed-demo-{ref}", actor=actor)
        seed_demo_loans(partner=partner, stdout=self.stdout)  # type: ignore[arg-type]
        employers = Employer.objects.filter(partner=partner).order_by("id")
        self.stdout.write(f"Insurers: {', '.join(c for c, _, _ in SANDBOX_INSURERS)}")
        for what, before, after in repaired:
            self.stdout.write(f"Repaired the {what} address: {before} -> {after}")
        for sandbox in sandboxes:
            where = sandbox.endpoint or f"folders var/{sandbox.outbound_folder} and var/{sandbox.inbound_folder}"
            self.stdout.write(f"Sandbox insurer {sandbox.code} ({sandbox.protocol}) reached at {where}")
        self.stdout.write("(REST and SOAP addresses come from KEEL_BASE_URL; KEEL_PORT sets its port)")
        self.stdout.write("Employers: " + ", ".join(f"{e.external_ref} (id {e.pk})" for e in employers))
        self.stdout.write(
            "Policies: "
            + ", ".join(
                f"{p.policy_number} (id {p.pk})"
                for p in Policy.objects.filter(employer__partner=partner).order_by("id")
            )
        )
        self.stdout.write(
            "The demo API key is random per install: `make run` prints it once everything is up, "
            "`make key` issues a fresh one (manage.py demo_key)."
        )
