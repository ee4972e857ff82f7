-- purpose: The distinct county names of one parsed source, to resolve to FIPS once per name.
-- input: the parsed source's Parquet file $parsed (typed, with _fail)
-- params: $parsed VARCHAR
-- grain: one row per distinct non-null county_name among the rows that passed their checks
SELECT DISTINCT county_name
FROM read_parquet($parsed)
WHERE _fail IS NULL AND county_name IS NOT NULL
ORDER BY county_name
