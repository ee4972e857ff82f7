-- purpose: Count the panel's stops by county, period and race (and any requested stop-level
--          covariates): the only rows that leave DuckDB for the panel.
-- input: {{filtered}}: the select_panel_stops query
-- params: $period VARCHAR ('month' | 'quarter' | 'year')
-- fragment params: $states VARCHAR[], $year_min INTEGER, $year_max INTEGER, $agencies VARCHAR[], $stop_types VARCHAR[], $reasons VARCHAR[]
--     $reason_category VARCHAR[] (only with PanelSpec.reason_category)
-- fragments: filtered, by_keys
-- grain: one row per county_fips x period x subject_race (x by-columns) with at least one stop
SELECT
    county_fips,
    state,
    CAST(CASE $period
        WHEN 'month' THEN year(date) * 12 + month(date) - 1
        WHEN 'quarter' THEN year(date) * 4 + quarter(date) - 1
        ELSE year(date)
    END AS BIGINT) AS period,
    coalesce(subject_race, 'NA') AS race,
    {{by_keys}}
    count(*) AS stops
FROM ({{filtered}}) AS f
WHERE ok_date AND ok_agency AND ok_type AND ok_reason AND ok_county
GROUP BY ALL
ORDER BY ALL
