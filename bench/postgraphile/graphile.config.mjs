// PostGraphile 5 for `bench/vendors.py --peer postgraphile5`: the Amber preset over Lodge's `public`
// schema, nothing added. bench/vendors.py starts it with this package's Node 22:
//   node node_modules/postgraphile/dist/cli-run.js -C graphile.config.mjs
// with LODGE_BENCH_PG_URL (a postgres:// URL for the bench database) and LODGE_BENCH_PG_PORT set.
// At start-up PostGraphile reports two recoverable naming conflicts (Lodge's `subscriptions` table
// against the root `Subscription` type, and `WorkflowEdge`); it leaves those types out, and the
// vendors and locations the benchmark reads are not concerned.
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const connectionString = process.env.LODGE_BENCH_PG_URL;
if (!connectionString) {
  throw new Error("LODGE_BENCH_PG_URL is not set");
}

/** @type {GraphileConfig.Preset} */
const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [makePgService({ connectionString, schemas: ["public"] })],
  grafserv: {
    host: "127.0.0.1",
    port: Number(process.env.LODGE_BENCH_PG_PORT ?? 5678),
    graphiql: false,
    watch: false,
  },
  grafast: { explain: false },
};

export default preset;
