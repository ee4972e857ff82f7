-- purpose: Count one source's data-quality flags: rows that pass every check and are stored, but whose
--          values are implausible. search_basis_without_search: a search basis is given but
--          search_conducted is not TRUE (FALSE, NA, or no such column; OPP predicates the basis on
--          the search); subject_age_outside_10_110: an age below $age_min or above $age_max;
--          location_outside_state: lat or lng outside the state's bounding box (longitude taken
--          modulo 360 from $lng_min, so a box across the antimeridian works; |lng| > 180 is outside).
--          A flag whose columns the source lacks is NULL (not checkable), not 0.
-- input: the source's staged year files $files (its stored rows)
-- params: $files VARCHAR[], $has_search_basis BOOLEAN, $has_age BOOLEAN, $has_location BOOLEAN, $age_min DOUBLE, $age_max DOUBLE, $lat_min DOUBLE, $lat_max DOUBLE, $lng_min DOUBLE, $lng_max DOUBLE
-- fragments: quality_columns
-- grain: one row
WITH kept AS (
    SELECT {{quality_columns}}
    FROM read_parquet($files) AS c
)
SELECT
    count(*) AS rows_checked,
    CASE WHEN $has_search_basis THEN
        count(*) FILTER (WHERE search_basis IS NOT NULL AND search_conducted IS DISTINCT FROM true)
    END AS search_basis_without_search,
    CASE WHEN $has_age THEN
        count(*) FILTER (WHERE subject_age < $age_min OR subject_age > $age_max)
    END AS subject_age_outside_10_110,
    CASE WHEN $has_location THEN
        count(*) FILTER (
            WHERE lat < $lat_min OR lat > $lat_max OR abs(lng) > 180
                OR ((lng - $lng_min) % 360 + 360) % 360 > $lng_max - $lng_min
        )
    END AS location_outside_state
FROM kept
