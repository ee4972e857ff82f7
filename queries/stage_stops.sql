-- purpose: Write one source's valid rows (already typed) of one year as a single Parquet file in the
--          ingest's staging directory (state=XX/year=YYYY/data_0.parquet, Hive layout), each with its
--          physical line, in file order. One file per statement gives the same bytes for the same input
--          (a PARTITION_BY write interleaves rows in the order its threads finish); the county code
--          comes from a map, not a join, which would give up the order.
-- input: the parsed source's Parquet file $parsed;
--        skip_offsets(threshold, k): k blank or rejected lines lie before the row whose file row
--        number >= threshold;
--        line_offsets(threshold, extra): logical lines >= threshold lie `extra` physical lines lower
-- params: $parsed VARCHAR, $out VARCHAR, $source_file VARCHAR, $first_line INTEGER, $year BIGINT
-- fragment params: $county_names VARCHAR[], $county_fips VARCHAR[]
-- fragments: stored_columns, year_expr, county_fips, skip_join, skipped_before, line_join, extra_before, order_by
-- grain: one row per stored stop of year $year (NULL: rows without a date)
COPY (
    WITH positioned AS (
        SELECT c.*, c.file_row_number + $first_line + {{skipped_before}} AS _logical
        FROM read_parquet($parsed, file_row_number = true) AS c
        {{skip_join}}
        WHERE c._fail IS NULL AND {{year_expr}} IS NOT DISTINCT FROM CAST($year AS BIGINT)
    )
    SELECT
        {{stored_columns}},
        $source_file AS source_file,
        c._logical + {{extra_before}} AS source_line,
        {{county_fips}} AS county_fips
    FROM positioned AS c
    {{line_join}}
    -- the ASOF joins of the line offsets do not keep the scan's order: sorting restores it
    {{order_by}}
) TO $out (FORMAT parquet, COMPRESSION zstd)
