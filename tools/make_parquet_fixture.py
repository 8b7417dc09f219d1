#!/usr/bin/env python3
"""Writes tests/fixtures/corpora/docs.parquet with pyarrow: a `text` column (snappy, several row
groups, one null row) and an `id` column, for the Parquet reader's tests.

Usage: python3 tools/make_parquet_fixture.py   (needs `pip install pyarrow`)
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TEXTS = [
    "First document.",
    "Second one, with unicode: café, naïve, 東京.",
    None,  # a null row: malformed, the caller's policy decides
    "def f(x):\n    return x + 1\n",
    "Last document in the table.",
]

out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "corpora" / "docs.parquet"
table = pa.table({"id": list(range(len(TEXTS))), "text": TEXTS})
pq.write_table(table, out, compression="snappy", row_group_size=2)
print(out, out.stat().st_size, "bytes")
