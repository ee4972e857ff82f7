-- purpose: Write one source's valid rows (already typed) as Hive-partitioned Parquet
--          (state=XX/year=YYYY) into the ingest's staging directory, each with its physical line.
-- input: the parsed source's Parquet file $parsed; county_lookup(county_name, county_fips);
--        skip_offsets(threshold, k): k blank or rejected lines lie before the row whose file row
--        number >= threshold;
--        line_offsets(threshold, extra): logical lines >= threshold lie `extra` physical lines lower
-- params: $parsed VARCHAR, $out VARCHAR, $source_file VARCHAR, $state VARCHAR, $first_line INTEGER
-- fragments: stored_columns, year_expr, county_join, skip_join, skipped_before, line_join, extra_before, order_by
-- grain: one row per stored stop
COPY (
    WITH positioned AS (
        SELECT c.*, c.file_row_number + $first_line + {{skipped_before}} AS _logical
        FROM read_parquet($parsed, file_row_number = true) AS c
        {{skip_join}}
        WHERE c._fail IS NULL
    )
    SELECT
        {{stored_columns}},
        $source_file AS source_file,
        c._logical + {{extra_before}} AS source_line,
        lk.county_fips AS county_fips,
        $state AS state,
        {{year_expr}} AS year
    FROM positioned AS c
    {{line_join}}
    {{county_join}}
    {{order_by}}
) TO $out (FORMAT parquet, PARTITION_BY (state, year), COMPRESSION zstd)
