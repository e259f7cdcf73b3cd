-- AlterTable: additive and nullable, the runbook's zero-downtime example
ALTER TABLE "users" ADD COLUMN "display_name" VARCHAR(255);
