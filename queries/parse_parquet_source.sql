-- purpose: Read one Parquet source as text and check and cast it exactly like a CSV source, so both
--          pass the same validation (see parse_csv_source).
-- input: a Parquet file at $path
-- params: $path VARCHAR
-- fragment params: $header VARCHAR[], $vocabularies MAP(VARCHAR, VARCHAR[])
-- fragments: table, text_columns, checked_columns
-- grain: one row per Parquet row, in file order
CREATE TABLE {{table}} AS
SELECT {{checked_columns}}
FROM (SELECT {{text_columns}} FROM read_parquet($path)) AS p
