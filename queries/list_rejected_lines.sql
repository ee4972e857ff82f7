-- purpose: The logical lines of the records the CSV parser refused, for line numbering.
-- input: the parser's rejects table {{rejects}}
-- params: (none)
-- fragments: rejects
-- grain: one row per refused logical line, ascending
SELECT DISTINCT line
FROM {{rejects}}
ORDER BY line
