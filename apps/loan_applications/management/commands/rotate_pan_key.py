from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.services import job_run
from apps.common.actors import Actor
from apps.loan_applications import pan as pan_crypto
from apps.loan_applications.services import pan_key_rotate_batch, pan_rotation_remaining


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored PAN under the active key version (PAN_ACTIVE_KEY_VERSION), in bounded "
        "batches. Old key versions stay readable until this has finished; remove them from "
        "PAN_ENCRYPTION_KEYS only after it reports 0 remaining."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        active = pan_crypto.key_ring().active_version
        actor = Actor.system("rotate_pan_key")
        failed: list[Any] = []
        rotated = batches = 0
        total = pan_rotation_remaining()
        self.stdout.write(f"Active PAN key version {active}; {total} application(s) to re-encrypt.")
        with job_run("loan_applications.rotate_pan_key", params={"batch_size": batch_size}) as run:
            while options["max_batches"] is None or batches < options["max_batches"]:
                result = pan_key_rotate_batch(batch_size=batch_size, actor=actor, exclude_ids=failed)
                batches += 1
                rotated += result.rotated
                failed.extend(result.failed_ids)
                if not result.rotated and not result.failed_ids:
                    break
                self.stdout.write(f"  batch {batches}: re-encrypted {rotated}/{total}, failed {len(failed)}")
            remaining = pan_rotation_remaining()
            run.counts.update({"rotated": rotated, "failed": len(failed), "remaining": remaining})
        for application_id in failed:
            self.stderr.write(f"  could not decrypt application {application_id} (tampered or unknown key)")
        self.stdout.write(f"Re-encrypted {rotated} PAN(s) under version {active}; {remaining} remaining.")
        if failed:
            raise CommandError(f"{len(failed)} PAN(s) could not be decrypted; see above.")
