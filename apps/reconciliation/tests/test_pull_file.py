"""The file insurer's statement reader (`pull_file.file_statement_charges`, ADR 0051) refuses, naming the row, a
statement whose manifest is right but whose rows the money match would misread: out of endorsement-id order, an id
or amount that is not an integer (a JSON `true` is not the id 1). No database: a local folder."""

from __future__ import annotations

import json

import pytest

from apps.insurers.files.roster import STATEMENT_SCHEMA_VERSION, statement_file_names
from apps.insurers.files.storage import LocalFolder
from apps.insurers.gateways.file import jsonl, manifest_for
from apps.reconciliation.pull import RosterPullError
from apps.reconciliation.pull_file import file_statement_charges

REQUEST = "run1-policy1"
POLICY = "POL-1"


def _statement(tmp_path, rows: list[dict]) -> tuple[LocalFolder, LocalFolder]:
    inbound, outbound = LocalFolder(tmp_path / "inbound"), LocalFolder(tmp_path / "outbound")
    data_name, manifest_name = statement_file_names(REQUEST)
    content = jsonl(rows)
    manifest = manifest_for(
        schema_version=STATEMENT_SCHEMA_VERSION, batch_id=REQUEST, insurer="ins", file=data_name, content=content
    )
    manifest["policy_number"] = POLICY
    inbound.write_files_atomic([(data_name, content), (manifest_name, json.dumps(manifest).encode())])
    return outbound, inbound


def _read(outbound: LocalFolder, inbound: LocalFolder) -> list[tuple[int, int]]:
    return list(
        file_statement_charges(
            outbound=outbound, inbound=inbound, policy_number=POLICY, request_id=REQUEST, sleep=lambda s: None
        )
    )


def test_a_verified_statement_is_read_in_order_and_imported(tmp_path) -> None:
    outbound, inbound = _statement(
        tmp_path, [{"endorsement_id": 3, "amount": 500}, {"endorsement_id": 7, "amount": -20}]
    )

    assert _read(outbound, inbound) == [(3, 500), (7, -20)]
    assert sorted(p.name for p in (tmp_path / "inbound" / "imported").iterdir()) == sorted(
        statement_file_names(REQUEST)
    )


@pytest.mark.parametrize(
    ("rows", "error"),
    [
        (
            [{"endorsement_id": 7, "amount": 1}, {"endorsement_id": 3, "amount": 1}],
            "row 2: endorsement ids are not in ascending order",
        ),
        ([{"endorsement_id": 5, "amount": 1}, {"endorsement_id": 5, "amount": 2}], "row 2: endorsement ids are not"),
        ([{"endorsement_id": True, "amount": 1}], "at row 1: endorsement_id and amount are integers"),
        ([{"endorsement_id": 1, "amount": False}], "at row 1: endorsement_id and amount are integers"),
        ([{"endorsement_id": 1, "amount": "5.00"}], "at row 1: endorsement_id and amount are integers"),
        ([{"endorsement_id": 1}], "at row 1: 'amount'"),
    ],
)
def test_a_statement_row_the_match_would_misread_fails_the_pull_naming_it(tmp_path, rows, error) -> None:
    outbound, inbound = _statement(tmp_path, rows)

    with pytest.raises(RosterPullError) as failed:
        _read(outbound, inbound)

    assert error in str(failed.value)
