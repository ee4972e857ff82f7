-- purpose: The distinct county names of one parsed source, to resolve to FIPS once per name.
-- input: the parsed table {{table}} (typed, with _fail)
-- params: (none)
-- fragments: table
-- grain: one row per distinct non-null county_name among the rows that passed their checks
SELECT DISTINCT county_name
FROM {{table}}
WHERE _fail IS NULL AND county_name IS NOT NULL
ORDER BY county_name
