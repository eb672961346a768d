-- name: freq_bin
-- kind: scalar
-- description: A token type's training-frequency bin: floor(log3(count)), so bin k holds the types with 3^k <= count < 3^(k+1); -1 for a type never seen in training (count 0). token_freq.bin holds it for every type.
-- params: c  -- the type's count in the training split
-- returns: INTEGER
-- The epsilon keeps exact powers of 3 in their own bin despite float rounding of ln(c) / ln(3).
CASE WHEN c = 0 THEN -1 ELSE CAST(floor(ln(c) / ln(3) + 1e-9) AS INTEGER) END
