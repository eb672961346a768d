-- name: loss_plateau
-- description: Per trial, has its training loss flattened? The mean logged training loss over the last `share` of its steps against the window of the same length just before, and the relative change (last / previous - 1): near 0 is flat, negative is still falling.
-- params: share := 0.1  -- each window's length as a share of the trial's last logged step
-- columns: trial_id, last_step, window_steps, previous_loss, last_loss, relative_change
WITH curves AS (
    SELECT trial_id, step, loss FROM train_curves()
),
spans AS (
    SELECT trial_id, max(step) AS last_step,
           greatest(1, floor(max(step) * share))::BIGINT AS window_steps
    FROM curves GROUP BY trial_id
),
windows AS (
    SELECT s.trial_id, s.last_step, s.window_steps,
           avg(c.loss) FILTER (WHERE c.step > s.last_step - 2 * s.window_steps
                                 AND c.step <= s.last_step - s.window_steps) AS previous_loss,
           avg(c.loss) FILTER (WHERE c.step > s.last_step - s.window_steps) AS last_loss
    FROM spans s JOIN curves c ON c.trial_id = s.trial_id
    GROUP BY s.trial_id, s.last_step, s.window_steps
),
final AS (
    SELECT *, last_loss / previous_loss - 1 AS relative_change FROM windows
)
SELECT * FROM final
