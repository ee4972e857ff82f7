-- purpose: The years of one source's valid rows: the store partitions its staging writes.
-- input: the parsed source's Parquet file $parsed
-- params: $parsed VARCHAR
-- fragments: year_expr
-- grain: one row per year (NULL last: rows without a date)
SELECT DISTINCT {{year_expr}} AS year
FROM read_parquet($parsed) AS c
WHERE c._fail IS NULL
ORDER BY year NULLS LAST
