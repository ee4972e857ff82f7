-- purpose: The number of stops in the store (the sample log's starting count).
-- input: stops: the store's stop view (Store.connect)
-- params: (none)
-- grain: one row
SELECT count(*) AS stops
FROM stops
