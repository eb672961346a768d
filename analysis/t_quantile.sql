-- name: t_quantile
-- description: The two-sided 95% Student t quantile t(0.975, df) for df = 1..20, 25, 30; confidence-interval queries take the largest df not above n - 1 and fall back to 1.96 beyond the table.
-- params: (none)
-- columns: df, t
WITH final AS (
    SELECT * FROM (VALUES (1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (6, 2.447), (7, 2.365),
           (8, 2.306), (9, 2.262), (10, 2.228), (11, 2.201), (12, 2.179), (13, 2.160), (14, 2.145),
           (15, 2.131), (16, 2.120), (17, 2.110), (18, 2.101), (19, 2.093), (20, 2.086), (25, 2.060),
           (30, 2.042)) AS q(df, t)
)
SELECT * FROM final
