-- purpose: An empty rejects table for sources that have no CSV parser stage (Parquet), so the
--          quarantine query reads the same shape for every source.
-- input: none
-- params: (none)
-- fragments: rejects
-- grain: no rows
CREATE TABLE {{rejects}} (
    line UBIGINT,
    column_idx UBIGINT,
    column_name VARCHAR,
    error_type VARCHAR,
    csv_line VARCHAR,
    error_message VARCHAR
)
