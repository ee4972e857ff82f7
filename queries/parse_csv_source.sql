-- purpose: Parse one CSV source and check and cast every field in the same pass, streamed to the
--          caller in file order (partitions.YearRouter writes the year files; memory stays flat
--          whatever the input's size). Each row keeps its typed values, `_fail` (NULL, 0 for a
--          repeated header line, or i when the i-th column failed its cast or vocabulary), `_raw`
--          (the row re-serialised, only when it failed) and `_year` (of its date; NULL without one).
--          Records that are broken as CSV (field count, quoting, encoding, over-long lines) go to
--          the rejects table instead. The file's row number is the order of the parsed records.
-- input: a CSV file, .csv.gz, or a named pipe carrying a zip member's bytes, at $path
-- params: $path VARCHAR, $columns STRUCT (column name -> 'VARCHAR', in header order), $rejects_table VARCHAR, $rejects_scan VARCHAR, $max_line_size BIGINT, $buffer_size BIGINT, $encoding VARCHAR, $compression VARCHAR
-- fragment params: $header VARCHAR[], $vocabularies MAP(VARCHAR, VARCHAR[])
-- fragments: typed_columns, fail_column, output_columns
-- grain: one row per structurally valid record, in file order
SELECT {{output_columns}}
FROM (
    SELECT p.*, {{fail_column}}
    FROM (
        SELECT p.*, {{typed_columns}}
        FROM read_csv(
            $path,
            header = true,
            auto_detect = false,
            delim = ',',
            quote = '"',
            escape = '"',
            nullstr = 'NA',
            columns = $columns,
            store_rejects = true,
            rejects_table = $rejects_table,
            rejects_scan = $rejects_scan,
            max_line_size = $max_line_size,
            buffer_size = $buffer_size,
            encoding = $encoding,
            compression = $compression
        ) AS p
    ) AS p
) AS p
