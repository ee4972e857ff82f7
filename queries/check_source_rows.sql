-- purpose: Give each parsed row its logical line and the code of its first failing check
--          (0 = a repeated header line; i > 0 = the i-th column failed its cast or vocabulary).
--          Used as the `checked` sub-query of stage_stops and stage_quarantine.
-- input: the staging table {{table}}; skip_offsets(threshold, k): k blank or rejected logical lines
--        lie before the row whose rowid >= threshold
-- params: $header VARCHAR[]
-- fragment params: $vocabularies MAP(VARCHAR, VARCHAR[])
-- fragments: table, header_fields, fail_cases, logical_line, skip_join
-- grain: one row per parsed row
SELECT
    p.*,
    CASE
        WHEN list_value({{header_fields}}) = $header THEN 0
        {{fail_cases}}
    END AS _fail,
    {{logical_line}} AS _logical
FROM {{table}} AS p
{{skip_join}}
