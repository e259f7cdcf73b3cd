-- CreateTable
CREATE TABLE "post_views" (
    "post_id" INTEGER NOT NULL,
    "day" DATE NOT NULL,
    "count" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "post_views_pkey" PRIMARY KEY ("post_id", "day")
);
