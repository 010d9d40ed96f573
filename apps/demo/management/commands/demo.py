"""`make demo`: an end-to-end run on the embedded defaults, printed as a readable timeline.

It serves this Django app on a free local port (so the sandbox insurer is reached over real HTTP, as in
production), then drives the outbox inline — relay, consumers, scheduler windows — instead of waiting for a
worker, so the run is deterministic and takes seconds:

1. a funded employer uploads a batch of additions, then a batch of leavers and joiners: all reach ACTIVE;
2. one addition is of a 70-year-old: the sandbox rejects it (age_limit) and its hold is released;
3. a lean employer's additions do not fit its balance: they park in ON_HOLD_FUNDS until a top-up wakes them;
4. one employer per insurer protocol — REST, SOAP (over HTTP) and files (batch file + manifest, the sandbox's
   result file imported) — reaches ACTIVE;
5. reconciliation (issue 12): the REST sandbox drifts in one way per discrepancy kind, a run finds exactly those
   five, each is resolved (resend, create_correction, create_addition, flag_for_finance, ignore with a note),
   and a second run finds none.

The sandbox insurers point at the temporary server only while the demo runs: every address it changed is put
back when it ends, however it ends (`sandbox_registered_temporarily`), so a `make run` next to it keeps working.
"""

from __future__ import annotations

import socket
import threading
from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.core.handlers.wsgi import WSGIHandler
from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.common.actors import Actor
from apps.common.money import format_minor
from apps.employers.models import Employer, Policy
from apps.employers.services import employer_create
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementHistory, EndorsementStatus
from apps.endorsements.parsing import draft_from_request
from apps.insurers.files.importer import result_files_import
from apps.insurers.sandbox.files import sandbox_files_process_all
from apps.insurers.sandbox.roster import sandbox_drift_apply
from apps.insurers.sandbox.setup import sandbox_registered_temporarily
from apps.ledger import services as ledger
from apps.ledger.selectors import balance_get
from apps.outbox.testing import drain
from apps.partners.models import Partner
from apps.partners.services import partner_create
from apps.reconciliation.api.serializers import discrepancy_value_at_api
from apps.reconciliation.models import Discrepancy
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import discrepancy_resolve, reconciliation_start


class _ThreadingServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._handle, args=(request, client_address), daemon=True)
        thread.start()

    def _handle(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Command(BaseCommand):
    help = "Drive an end-to-end endorsement run on this machine and print its timeline."

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("manage.py demo")
        port = _free_port()
        server = make_server(
            "127.0.0.1", port, WSGIHandler(), server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started = timezone.now()
        # The sandbox insurers point at this temporary server while the demo runs, and back at wherever they
        # pointed before (a running `make run`) when it ends, however it ends (issue 11).
        try:
            with sandbox_registered_temporarily(
                base_url=f"http://127.0.0.1:{port}", codes=("sandbox-rest", "sandbox-soap", "sandbox-file")
            ) as insurers:
                self._script(insurers, actor, started)
        finally:
            server.shutdown()

    # long: the demo script, one numbered step after another, read top to bottom as the printed timeline.
    def _script(self, insurers: list[Any], actor: Actor, started: Any) -> None:
        insurer = insurers[0]
        run = started.strftime("%H%M%S")
        partner = Partner.objects.filter(name="demo-partner").first() or partner_create(
            name="demo-partner", actor=actor
        )
        today = timezone.localdate()
        funded = self._employer(partner, f"DEMO-FUNDED-{run}", "Funded Industries", actor)
        lean = self._employer(partner, f"DEMO-LEAN-{run}", "Lean Startups", actor)
        funded_policy = self._policy(funded, insurer, f"GMC-F-{run}", today)
        lean_policy = self._policy(lean, insurer, f"GMC-L-{run}", today)
        ledger.topup_post(employer_id=funded.pk, amount=1_000_000_00, reference=f"demo-{run}-1", actor=actor)
        ledger.topup_post(employer_id=lean.pk, amount=1_000_00, reference=f"demo-{run}-2", actor=actor)

        self.stdout.write(self.style.MIGRATE_HEADING("1. Funded employer: a batch of additions (back-dated)"))
        joined = today - timedelta(days=10)
        rows = [self._addition(f"F{i}", joined, f"1988-04-0{i + 1}") for i in range(4)]
        rows.append(self._addition("F-SENIOR", joined, "1950-01-15"))  # over 65: the insurer refuses
        self._batch(funded, funded_policy, rows, partner, actor)
        self.stdout.write(f"   balance: {self._balance(funded)} (the refused member's hold was released)")
        self.stdout.write(self.style.MIGRATE_HEADING("   … then a batch of two leavers and two joiners"))
        rows = [
            {"type": "deletion", "employee_code": code, "effective_date": today.isoformat()} for code in ("F0", "F1")
        ]
        rows += [self._addition(f"F{i}", today, "1991-09-09") for i in (4, 5)]
        self._batch(funded, funded_policy, rows, partner, actor)
        self.stdout.write(f"   balance: {self._balance(funded)}")

        self.stdout.write(self.style.MIGRATE_HEADING("2. Lean employer: additions that do not fit its balance"))
        for i in range(2):
            services.endorsement_submit(
                employer=lean,
                policy=lean_policy,
                draft=draft_from_request(self._addition(f"L{i}", today, "1992-07-11")),
                partner_id=partner.pk,
                actor=actor,
            )
        self._pump(actor)
        self.stdout.write(f"   balance before top-up: {self._balance(lean)}")
        self.stdout.write(self.style.MIGRATE_HEADING("3. The lean employer tops up"))
        ledger.topup_post(employer_id=lean.pk, amount=100_000_00, reference=f"demo-{run}-3", actor=actor)
        self._pump(actor)
        self.stdout.write(f"   balance after: {self._balance(lean)}")

        self.stdout.write(self.style.MIGRATE_HEADING("4. One employer per insurer protocol"))
        per_protocol = []
        for sandbox in insurers:
            employer = self._employer(partner, f"DEMO-{sandbox.protocol.upper()}-{run}", sandbox.name, actor)
            policy = self._policy(employer, sandbox, f"GMC-{sandbox.protocol.upper()}-{run}", today)
            ledger.topup_post(
                employer_id=employer.pk, amount=100_000_00, reference=f"demo-{run}-{sandbox.code}", actor=actor
            )
            rows = [self._addition(f"{sandbox.protocol[0].upper()}{i}", today, "1990-02-02") for i in range(2)]
            self._batch(employer, policy, rows, partner, actor)
            statuses = sorted(set(Endorsement.objects.filter(employer=employer).values_list("status", flat=True)))
            self.stdout.write(f"   {sandbox.code} ({sandbox.protocol}): {', '.join(statuses)}")
            per_protocol.append(employer.pk)

        self._reconciliation(funded_policy, actor)
        self._timeline([funded.pk, lean.pk, *per_protocol], started)

    def _reconciliation(self, policy: Policy, actor: Actor) -> None:
        """Step 5: one drift per discrepancy kind at the REST sandbox, a run that finds each, each resolved, and a
        second run that finds none (the sandbox's roster follows what it confirms)."""
        self.stdout.write(self.style.MIGRATE_HEADING("5. Reconciliation: the insurer's roster and charges drift"))
        code, number = policy.insurer.code, policy.policy_number
        left = Endorsement.objects.filter(policy=policy, type="deletion").values("employee_code")
        covered = list(
            Endorsement.objects.filter(policy=policy, type="addition", status=EndorsementStatus.ACTIVE)
            .exclude(employee_code__in=left)
            .order_by("employee_code")
        )
        gone, wrong_dob, wrong_charge, no_charge = covered[:4]
        for spec in (
            f"drop_member:{gone.employee_code}",
            f"change:{wrong_dob.employee_code}:date_of_birth=1979-12-31",
            "add_member:X-ONLY:Ravi:Iyer:1985-03-04:300000.00",
            f"charge_amount:{wrong_charge.pk}:{format_minor(wrong_charge.premium_amount + 5_00)}",
            f"drop_charge:{no_charge.pk}",
        ):
            self.stdout.write(f"   sandbox: {sandbox_drift_apply(code=code, policy_number=number, spec=spec)}")
        found = self._reconcile(policy, actor)
        actions = {
            "missing_at_insurer": ("resend", "the insurer lost the member: send it again"),
            "field_mismatch": ("create_correction", "the insurer has the right date of birth"),
            "missing_internally": ("create_addition", "joined through the insurer's portal"),
            "amount_mismatch": ("flag_for_finance", "finance to ask for a credit note"),
            "charge_missing": ("ignore", "the insurer waived this charge"),
        }
        for discrepancy in Discrepancy.objects.filter(run=found).order_by("id"):
            action, note = actions[discrepancy.kind]
            done = discrepancy_resolve(
                discrepancy_id=discrepancy.pk, action=action, note=note, gender="male", actor=actor
            )
            self.stdout.write(f"   resolved {discrepancy.kind:<18} with {action:<17} → {done.status} ({note})")
        self._pump(actor)
        self.stdout.write("   … and a second run:")
        self._reconcile(policy, actor)

    def _reconcile(self, policy: Policy, actor: Actor) -> Any:
        run = reconciliation_start(
            insurer_id=policy.insurer_id,
            employer_ids=[policy.employer_id],
            employer_id=policy.employer_id,
            policy_id=policy.pk,
            partner_id=None,
            actor=actor,
            queue=False,  # executed here, below
        )
        done = reconciliation_execute(run_id=run.pk)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(done.summary.items()) if v and k not in ("pages_pulled",))
        self.stdout.write(f"   run {done.pk} {done.status} ({done.percent}%): {counts}")
        for d in Discrepancy.objects.filter(run=done).order_by("id"):
            subject = d.employee_code or f"endorsement #{d.endorsement_id}"
            field = f" {d.field}" if d.field else ""
            keel = discrepancy_value_at_api(d, d.keel_value)
            theirs = discrepancy_value_at_api(d, d.insurer_value)
            shown = f": Keel {keel} / insurer {theirs or 'nothing'}" if d.field or d.endorsement_id else ""
            self.stdout.write(f"     {d.kind:<18} {subject}{field}{shown}")
        return done

    def _employer(self, partner: Partner, ref: str, name: str, actor: Actor) -> Employer:
        return employer_create(
            partner_id=partner.pk,
            name=name,
            external_ref=ref,
            contact_email="hr@demo.example",
            low_balance_threshold=500_00,
            actor=actor,
        )

    def _policy(self, employer: Employer, insurer: Any, number: str, today: date) -> Policy:
        return Policy.objects.create(
            employer=employer,
            insurer=insurer,
            policy_number=number,
            start_date=today - timedelta(days=30),
            end_date=today + timedelta(days=334),
            premium_rate_per_mille=Decimal("4.5"),
            default_sum_insured=300_000_00,
        )

    def _addition(self, code: str, today: date, dob: str) -> dict[str, Any]:
        return {
            "type": "addition",
            "effective_date": today.isoformat(),
            "employee": {
                "employee_code": code,
                "first_name": "Demo",
                "last_name": code,
                "date_of_birth": dob,
                "gender": "female",
                "email": f"{code.lower()}@demo.example",
            },
        }

    def _batch(
        self, employer: Employer, policy: Policy, rows: list[dict[str, Any]], partner: Partner, actor: Actor
    ) -> None:
        services.endorsement_batch_create(
            employer=employer,
            policy=policy,
            drafts=[draft_from_request(r) for r in rows],
            parse_errors=[],
            source="json",
            partner_id=partner.pk,
            actor=actor,
        )
        self._pump(actor)

    def _pump(self, actor: Actor) -> None:
        for _ in range(10):
            drain()
            sent = services.scheduler_tick(actor=actor, force=True)
            drain()
            # What beat does under `make run`: the sandbox file insurer answers, result files are imported.
            answered = sandbox_files_process_all()
            imported = sum(result_files_import().values())
            drain()
            if not (sent or answered or imported):
                return

    def _balance(self, employer: Employer) -> str:
        b = balance_get(employer_id=employer.pk)
        return f"posted ₹{format_minor(b.posted)}, held ₹{format_minor(b.held)}, available ₹{format_minor(b.available)}"

    def _timeline(self, employer_ids: list[int], since: Any) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING("Timeline"))
        rows = (
            EndorsementHistory.objects.filter(endorsement__employer_id__in=employer_ids, at__gte=since)
            .select_related("endorsement")
            .order_by("id")
        )
        for h in rows:
            e = h.endorsement
            arrow = f"{h.from_status or '·'} → {h.to_status}"
            self.stdout.write(
                f"  {h.at:%H:%M:%S.%f}"[:-3] + f"  #{e.pk:<5} {e.type:<10} {e.employee_code:<9} {arrow:<32} {h.detail}"
            )
        self.stdout.write(self.style.MIGRATE_HEADING("Outcome"))
        for e in Endorsement.objects.filter(employer_id__in=employer_ids).order_by("id"):
            extra = f" ({e.rejection_class}: {e.rejection_reason})" if e.rejection_class else ""
            self.stdout.write(
                f"  #{e.pk:<5} {e.employee_code:<9} {e.type:<10} {e.status:<14} "
                f"₹{format_minor(e.premium_amount)} {e.premium_direction}{extra}"
            )
