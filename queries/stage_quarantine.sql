-- purpose: Write one source's rejected rows (failed checks, and records the CSV parser refused) to a
--          quarantine Parquet file, each with its physical line, first failing column and reason.
-- input: the source's rows that failed a check, Parquet file $failed (`_row`: the parsed record's
--        ordinal, `_fail`, `_raw`; see partitions.YearRouter); fail_codes(code, column_name, reason,
--        message); the parser's rejects table {{rejects}}; skip_offsets(threshold, k);
--        line_offsets(threshold, extra)
-- params: $failed VARCHAR, $out VARCHAR, $source_file VARCHAR, $first_line INTEGER
-- fragments: rejects, skip_join, skipped_before
-- grain: one row per rejected input row
COPY (
    WITH failed AS (
        SELECT
            c._row + $first_line + {{skipped_before}} AS logical_line,
            f.column_name,
            f.reason,
            c._raw AS raw_text,
            f.message
        FROM read_parquet($failed) AS c
        {{skip_join}}
        JOIN fail_codes AS f ON f.code = c._fail
    ),
    refused AS (
        SELECT
            line AS logical_line,
            arg_min(CASE WHEN error_type IN ('MISSING COLUMNS', 'TOO MANY COLUMNS') THEN NULL ELSE column_name END, coalesce(column_idx, 0)) AS column_name,
            arg_min(CASE error_type
                WHEN 'MISSING COLUMNS' THEN 'field_count'
                WHEN 'TOO MANY COLUMNS' THEN 'field_count'
                WHEN 'UNQUOTED VALUE' THEN 'quote'
                WHEN 'INVALID STATE' THEN 'quote'
                WHEN 'LINE SIZE OVER MAXIMUM' THEN 'line_too_long'
                WHEN 'INVALID ENCODING' THEN 'encoding'
                ELSE 'type_cast'
            END, coalesce(column_idx, 0)) AS reason,
            arg_min(csv_line, coalesce(column_idx, 0)) AS raw_text,
            arg_min(CASE error_type
                WHEN 'INVALID ENCODING' THEN error_message || ' If the file is Latin-1 (Windows-1252), ingest it again with --encoding latin-1 (Python: encoding="latin-1").'
                ELSE error_message
            END, coalesce(column_idx, 0)) AS message
        FROM {{rejects}}
        GROUP BY line
    ),
    rejected AS (
        SELECT * FROM failed
        UNION ALL
        SELECT * FROM refused
    )
    SELECT
        $source_file AS source_file,
        CAST(r.logical_line + coalesce(o.extra, 0) AS BIGINT) AS source_line,
        r.column_name AS "column",
        r.reason,
        r.raw_text,
        r.message
    FROM rejected AS r
    ASOF LEFT JOIN line_offsets AS o ON r.logical_line >= o.threshold
    ORDER BY source_line
) TO $out (FORMAT parquet, COMPRESSION zstd)
