-- purpose: Drop a per-source staging table once its rows are staged, to free memory and spill.
-- input: none
-- params: (none)
-- fragments: table
-- grain: none
DROP TABLE IF EXISTS {{table}}
