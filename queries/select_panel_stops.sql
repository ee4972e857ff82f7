-- purpose: The store's stops with one flag per sample filter, so the sample-log counts and the cell
--          aggregation apply the same filters (used as the `filtered` sub-query of both).
--          An empty list parameter means "no filter"; NULL years mean "no bound".
-- input: stops: the store's stop view (Store.connect)
-- params: $states VARCHAR[], $year_min INTEGER, $year_max INTEGER, $agencies VARCHAR[], $stop_types VARCHAR[], $reasons VARCHAR[]
-- fragment params: $reason_category VARCHAR[] (in by_columns, only with PanelSpec.reason_category)
-- fragments: by_columns
-- grain: one row per stored stop
SELECT
    county_fips,
    state,
    date,
    subject_race,
    {{by_columns}}
    (len($states) = 0 OR list_contains($states, state)) AS ok_state,
    (date IS NOT NULL
        AND ($year_min IS NULL OR year >= $year_min)
        AND ($year_max IS NULL OR year <= $year_max)) AS ok_date,
    (len($agencies) = 0 OR list_contains($agencies, department_name)) AS ok_agency,
    (len($stop_types) = 0 OR list_contains($stop_types, type)) AS ok_type,
    (len($reasons) = 0 OR list_contains($reasons, reason_for_stop)) AS ok_reason,
    county_fips IS NOT NULL AS ok_county
FROM stops
WHERE len($states) = 0 OR list_contains($states, state)
