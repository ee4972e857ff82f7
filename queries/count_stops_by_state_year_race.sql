-- purpose: Stops by state, year and race over the whole store (the demo's and notebook's first table).
-- input: stops: the store's stop view (store.connect) (state, year, subject_race)
-- params: (none)
-- grain: one row per state x year x subject_race
SELECT
    state,
    year,
    coalesce(subject_race, 'NA') AS subject_race,
    count(*) AS stops
FROM stops
GROUP BY ALL
ORDER BY state, year NULLS LAST, subject_race
