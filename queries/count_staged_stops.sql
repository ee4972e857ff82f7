-- purpose: Count the rows one source wrote to staging, and those without a county FIPS, for the
--          reconciliation read = stored + quarantined.
-- input: the source's staged Parquet files
-- params: $files VARCHAR[]
-- grain: one row
SELECT count(*) AS stored, count(*) FILTER (WHERE county_fips IS NULL) AS without_county
FROM read_parquet($files)
