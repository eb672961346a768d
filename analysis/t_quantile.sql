-- name: t_quantile
-- description: The exact two-sided 95% Student t quantile t(0.975, df) for every df from 1 to the catalog's bound (at least 1024 and the number of trials), computed with scipy when the catalog is built; the confidence-interval queries take df = n - 1.
-- params: (none)
-- columns: df, t
WITH final AS (
    SELECT df, t FROM t_quantiles
)
SELECT * FROM final ORDER BY df
