-- purpose: Parse one CSV source into a staging table of text fields; records that are broken as CSV
--          (wrong field count, bad quoting, invalid encoding, over-long lines) go to the rejects table.
-- input: a CSV file, .csv.gz, or a named pipe carrying a zip member's bytes, at $path
-- params: $path VARCHAR, $columns STRUCT (column name -> 'VARCHAR', in header order), $rejects_table VARCHAR, $rejects_scan VARCHAR, $max_line_size BIGINT, $encoding VARCHAR, $compression VARCHAR
-- fragments: table
-- grain: one row per structurally valid record, in file order (rowid = order among them)
CREATE TABLE {{table}} AS
SELECT *
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
    encoding = $encoding,
    compression = $compression
)
