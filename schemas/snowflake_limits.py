"""Snowflake's documented limits: the one place naming, DDL, staging and the test suite's
statement checker read them from.

The local emulator (DuckDB behind fakesnow) accepts more than Snowflake does, so what segflow
sends must be held against these numbers, not against what the emulator lets through.

Each limit, its value and where Snowflake documents it (docs.snowflake.com):

- identifier length: 255 characters ("Identifier requirements": quoted or not, 1-255).
- quoted identifiers: any character, with `"` doubled ("Identifier requirements").
- VARCHAR length: 16,777,216 bytes ("String & binary data types": the default maximum of a
  VARCHAR declared without a length, which is how segflow declares every text column).
- VARIANT / OBJECT / ARRAY size: 16,777,216 bytes ("Semi-structured data types": the default
  maximum size of one value, uncompressed).
- NUMBER precision: 38 digits ("Numeric data types": NUMBER(p, s) with p at most 38).
- FLOAT: an IEEE 754 double; NaN and +/-inf are accepted ("Numeric data types").
- TIMESTAMP years: 0001-9999 ("Date & time data types": years past 9999 are refused).
- columns per table: segflow's own cap. Snowflake documents no fixed count, but a row must fit
  its micro-partition format and each statement the statement-size limit; segflow keeps tables
  under a cap so its DDL and loads stay well inside both.
- statement text: 1,048,576 bytes ("Query limits": SQL statement size).
"""

from __future__ import annotations

MAX_IDENTIFIER_LENGTH = 255
MAX_VARCHAR_BYTES = 16_777_216
MAX_VARIANT_BYTES = 16_777_216
MAX_NUMBER_PRECISION = 38
MIN_TIMESTAMP_YEAR = 1
MAX_TIMESTAMP_YEAR = 9999
MAX_COLUMNS_PER_TABLE = 1_000
MAX_STATEMENT_BYTES = 1_048_576
