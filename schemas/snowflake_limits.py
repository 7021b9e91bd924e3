"""Snowflake's documented limits: the one place naming, DDL, staging and the test suite's
statement checker read them from.

The local emulator (DuckDB behind fakesnow) accepts more than Snowflake does, so what segflow
sends must be held against these numbers, not against what the emulator lets through.

| limit | value | source (docs.snowflake.com) |
| --- | --- | --- |
| identifier length | 255 characters | "Identifier requirements": identifiers (quoted or not) are 1-255 characters |
| quoted identifier | any character; `"` doubled | "Identifier requirements": double-quoted identifiers |
| VARCHAR length | 16,777,216 bytes | "String & binary data types": the default (and, for tables created
  without an explicit length, the effective) maximum of VARCHAR; the larger 128 MB maximum needs an
  explicit length, which segflow never declares |
| VARIANT / OBJECT / ARRAY size | 16,777,216 bytes | "Semi-structured data types": the default
  maximum size of one VARIANT value (uncompressed) |
| NUMBER precision | 38 digits | "Numeric data types": NUMBER(p, s), p at most 38 |
| FLOAT | IEEE 754 double; NaN and +/-inf are accepted | "Numeric data types": special values |
| TIMESTAMP years | 0001-9999 | "Date & time data types": years outside 1582-9999 are not
  recommended; Snowflake refuses years past 9999 |
| columns per table | segflow's own cap, `MAX_COLUMNS_PER_TABLE` | Snowflake documents no
  fixed count but a row must fit its micro-partition format and every statement its 1 MB text
  limit; segflow keeps each table under a cap so its DDL and loads stay well inside both |
| statement text | 1,048,576 bytes | "Query limits": SQL statement size |
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
