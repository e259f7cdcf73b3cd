-- AlterTable: RISKY on a big table (SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock);
-- the demo keeps it so the linter's warning and the "Downtime window" checklist item show up.
UPDATE "posts" SET "title" = 'Untitled' WHERE "title" IS NULL;
ALTER TABLE "posts" ALTER COLUMN "title" SET NOT NULL;
