-- purpose: Stops remaining after each sample filter in turn (state, date window, agency, stop type,
--          reason for stop, county known), for the panel's sample log; one scan of the store.
-- input: {{filtered}}: the select_panel_stops query
-- params: (none)
-- fragment params: $states VARCHAR[], $year_min INTEGER, $year_max INTEGER, $agencies VARCHAR[], $stop_types VARCHAR[], $reasons VARCHAR[]
--     $reason_category VARCHAR[] (only with PanelSpec.reason_category)
-- fragments: filtered
-- grain: one row
SELECT

    count(*) AS in_states,
    count(*) FILTER (WHERE ok_date) AS in_date_window,
    count(*) FILTER (WHERE ok_date AND ok_agency) AS of_agency,
    count(*) FILTER (WHERE ok_date AND ok_agency AND ok_type) AS of_stop_type,
    count(*) FILTER (WHERE ok_date AND ok_agency AND ok_type AND ok_reason) AS of_reason,
    count(*) FILTER (WHERE ok_date AND ok_agency AND ok_type AND ok_reason AND ok_county) AS with_county
FROM ({{filtered}}) AS f
