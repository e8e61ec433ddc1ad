// node-postgres named prepared statements through PgBouncer in transaction mode.
//
// One `pg` Client runs the named statements `get-x` and `backend` ROUNDS times, inside
// transactions and outside them (autocommit), while CHURNERS other clients run short
// transactions, so PgBouncer hands the client a different server connection from time to time.
// node-postgres sends a named statement's Parse only once per Client and afterwards only its
// name: on every other server connection it is PgBouncer (`max_prepared_statements`) that has to
// prepare it again. The script prints one JSON line (counts only, never the URL) and exits 0
// when it could run; the test judges the numbers.
'use strict';

const { Client } = require('pg');

const ROUNDS = Number(process.env.ROUNDS || 300);
const CHURNERS = Number(process.env.CHURNERS || 25);
const CHURN_LIMIT = 5000; // transactions per churner, at most
const DEADLINE_MS = Number(process.env.DEADLINE_MS || 60000);

const GET_X = 'select $1::int + 1';
const ON_SERVER = 'select count(*)::int as n from pg_prepared_statements where statement = $1';

function newClient() {
  // connectionString is DATABASE_URL exactly as the app gets it (the test changes its host only).
  return new Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 5000 });
}

async function churn(state) {
  const client = newClient();
  await client.connect();
  let done = 0;
  try {
    while (!state.stop && done < CHURN_LIMIT) {
      await client.query('BEGIN');
      await client.query('select pg_sleep(0.002)');
      await client.query('COMMIT');
      done += 1;
    }
  } finally {
    await client.end();
  }
  return done;
}

async function main() {
  const started = Date.now();
  const state = { stop: false };
  const result = {
    pg: require('pg/package.json').version,
    rounds: 0,
    wrong: 0,
    errors: [],
    backends: 0,
    preparedOnServer: [],
    churned: 0,
  };
  const churners = [];
  for (let i = 0; i < CHURNERS; i += 1) churners.push(churn(state));

  const client = newClient();
  await client.connect();
  const backends = new Set();
  try {
    for (let i = 0; i < ROUNDS && Date.now() - started < DEADLINE_MS; i += 1) {
      try {
        await client.query('BEGIN');
        const x = await client.query({ name: 'get-x', text: GET_X, values: [i] });
        const who = await client.query({ name: 'backend', text: 'select pg_backend_pid() as pid' });
        backends.add(who.rows[0].pid);
        if (x.rows[0]['?column?'] !== i + 1) result.wrong += 1;
        if (i % 50 === 0) {
          // On the server connection this transaction holds, `get-x` is really prepared.
          const seen = await client.query({ text: ON_SERVER, values: [GET_X] });
          result.preparedOnServer.push(seen.rows[0].n);
        }
        await client.query('COMMIT');
        // The same named statement outside a transaction (autocommit).
        const y = await client.query({ name: 'get-x', text: GET_X, values: [2 * i] });
        if (y.rows[0]['?column?'] !== 2 * i + 1) result.wrong += 1;
        result.rounds += 1;
      } catch (error) {
        result.errors.push(String(error && error.message));
        if (result.errors.length >= 5) break;
        await client.query('ROLLBACK').catch(() => {});
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    state.stop = true;
    const churned = await Promise.allSettled(churners);
    for (const outcome of churned) {
      if (outcome.status === 'fulfilled') result.churned += outcome.value;
      else result.errors.push('churner: ' + String(outcome.reason && outcome.reason.message));
    }
    await client.end();
  }
  result.backends = backends.size;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((error) => {
  process.stderr.write('node-pg script failed: ' + String(error && error.message) + '\n');
  process.exit(1);
});
