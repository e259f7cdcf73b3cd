// Prisma 6.19.3 with its WASM schema engine over @prisma/adapter-pg: no native engine download.
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  adapter: async () => new PrismaPg({ connectionString: process.env.DATABASE_URL!, allowExitOnIdle: true }),
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
});
