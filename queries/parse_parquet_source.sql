-- purpose: Read one Parquet source into a staging table of text fields, so Parquet and CSV inputs
--          pass through the same validation and casts.
-- input: a Parquet file at $path
-- params: $path VARCHAR
-- fragments: table, text_columns
-- grain: one row per Parquet row, in file order (rowid)
CREATE TABLE {{table}} AS
SELECT {{text_columns}}
FROM read_parquet($path)
