-- purpose: Read one Parquet source as text and check and cast it exactly like a CSV source, so both
--          pass the same validation (see parse_csv_source).
-- input: a Parquet file at $path
-- params: $path VARCHAR
-- fragment params: $header VARCHAR[], $vocabularies MAP(VARCHAR, VARCHAR[])
-- fragments: text_columns, typed_columns, fail_column, output_columns
-- grain: one row per Parquet row, in file order (streamed, as parse_csv_source)
SELECT {{output_columns}}
FROM (
    SELECT p.*, {{fail_column}}
    FROM (
        SELECT p.*, {{typed_columns}}
        FROM (SELECT {{text_columns}} FROM read_parquet($path)) AS p
    ) AS p
) AS p
