-- purpose: Count one source's quarantined rows by reason code.
-- input: the source's staged quarantine Parquet file
-- params: $file VARCHAR
-- grain: one row per reason
SELECT reason, count(*) AS n
FROM read_parquet($file)
GROUP BY reason
ORDER BY reason
