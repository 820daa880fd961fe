import pg from 'pg';

/**
 * A node-postgres pool whose clients can lose their connection at any moment without taking the
 * process down. A client whose socket ends unexpectedly (a link cut, a backend or its server
 * killed: no error message from the server first) fails its queries and then emits 'error' on
 * itself; the pool listens for that only while the client is idle in it, and removes its listener
 * while the client is checked out. Unheard, that 'error' was an uncaught exception: the distributor,
 * the console or the command API died of a connection lost under a write or a read. Each client
 * gets a listener of its own for its whole life: the failure reaches the caller through the query
 * it fails (and a query on the dead client fails at once), which releases the client as broken;
 * an idle client's error still reaches the pool's 'error' listeners, as before.
 */
export function createPool(config: pg.PoolConfig): pg.Pool {
  const pool = new pg.Pool(config);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}
