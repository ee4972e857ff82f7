-- purpose: The distinct county names of one parsed source, to resolve to FIPS once per name.
-- input: the staging table {{table}} (county_name as text)
-- params: (none)
-- fragments: table
-- grain: one row per distinct non-null county_name (a repeated header line's 'county_name' excluded)
SELECT DISTINCT county_name
FROM {{table}}
WHERE county_name IS NOT NULL AND county_name <> 'county_name'
ORDER BY county_name
