"""Integer ids and counters: the range every Keel id column holds (PostgreSQL bigint; ADR 0015).

An id outside this range cannot name a row: in a path it is 404, in a body, query or filter it is 422
naming the field, and it never reaches the database (where it would overflow the column's type).
"""

from __future__ import annotations

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
