-- Partial rollback of 20240122000000_add_post_views (the runbook's "Partial Rollback")
DROP TABLE "post_views";
