import pg from 'pg';

/**
 * One read under the server's statement timeout, in a read-only transaction of its own whose
 * first statement sets the timeout for it alone (SET LOCAL): behind PgBouncer in transaction mode
 * the transaction keeps one server connection for its three statements, and leaves no setting on
 * it for the next client (postgres-settings.ts poolConfig: why not a startup parameter). A read
 * past `timeoutMs` ends with SQLSTATE 57014 on the server, which then stops working on it.
 */
export async function readWithin(pool: pg.Pool, timeoutMs: number, sql: string, params: unknown[]): Promise<unknown[]> {
  const client = await pool.connect();
  let healthy = true;
  try {
    await client.query(`BEGIN READ ONLY; SET LOCAL statement_timeout = ${Math.trunc(timeoutMs)}`);
    const { rows } = await client.query(sql, params);
    await client.query('COMMIT');
    return rows as unknown[];
  } catch (err) {
    // A failure the server reported leaves the connection in step with it: back out of the
    // transaction for the connection's next user, and destroy a connection that cannot. Any other
    // (the client's read timeout, the statement perhaps still running; the connection lost) leaves
    // it in no known state: destroyed at once, as a ROLLBACK would wait behind the statement for a
    // read timeout of its own, and the caller twice the time poolConfig gives the client.
    if (err instanceof pg.DatabaseError) await client.query('ROLLBACK').catch(() => (healthy = false));
    else healthy = false;
    throw err;
  } finally {
    client.release(!healthy);
  }
}
