-- purpose: Write one source's valid rows, cast to the store's types, as Hive-partitioned Parquet
--          (state=XX/year=YYYY) into the ingest's staging directory.
-- input: {{checked}}: the check_source_rows query over the source's staging table; county_lookup(county_name, county_fips); line_offsets(threshold,
--        extra): logical lines >= threshold lie `extra` physical lines further down
-- params: $out VARCHAR, $source_file VARCHAR, $state VARCHAR
-- fragment params: $header VARCHAR[], $vocabularies MAP(VARCHAR, VARCHAR[])
-- fragments: checked, stored_columns, year_expr, county_join, line_join, order_by
-- grain: one row per stored stop
COPY (
    SELECT
        {{stored_columns}},
        $source_file AS source_file,
        c._logical + coalesce(o.extra, 0) AS source_line,
        lk.county_fips AS county_fips,
        $state AS state,
        {{year_expr}} AS year
    FROM ({{checked}}) AS c
    {{line_join}}
    {{county_join}}
    WHERE c._fail IS NULL
    {{order_by}}
) TO $out (FORMAT parquet, PARTITION_BY (state, year), COMPRESSION zstd)
