-- purpose: Rewrite one staged year file of a source whose parse skipped lines (blank lines, records
--          the CSV parser refused) or held records spanning several lines: each row's source_line,
--          written as first line + the parsed record's ordinal, becomes its physical line. Rows stay
--          in file order (the ASOF joins do not keep the scan's order: sorting restores it).
-- input: a staged year file $staged (see partitions.YearRouter; read without the state and year
--        of its Hive path, which the file must not hold); skip_offsets(threshold, k): k
--        skipped lines lie before the record whose ordinal >= threshold; line_offsets(threshold,
--        extra): logical lines >= threshold lie `extra` physical lines lower
-- params: $staged VARCHAR, $out VARCHAR, $first_line INTEGER
-- fragments: skip_join, skipped_before, line_join, extra_before
-- grain: one row per row of $staged, in file order
COPY (
    WITH positioned AS (
        SELECT c.*, c.source_line - $first_line AS _row
        FROM read_parquet($staged, hive_partitioning = false) AS c
    ),
    logical AS (
        SELECT c.* EXCLUDE (_row), c.source_line + {{skipped_before}} AS _logical
        FROM positioned AS c
        {{skip_join}}
    )
    SELECT c.* EXCLUDE (_logical) REPLACE (CAST(c._logical + {{extra_before}} AS BIGINT) AS source_line)
    FROM logical AS c
    {{line_join}}
    ORDER BY source_line
) TO $out (FORMAT parquet, COMPRESSION zstd)
