import type { Server } from 'node:net';
import type { LimitedLog } from '../../../shared/limited-log.ts';

/**
 * A local input: how programs and sensors on the device hand readings, events and files to the field
 * client (HTTP, MQTT, a watched folder). Each is built from its settings without touching anything;
 * `start` binds its port or starts polling and resolves once it takes input; `close` stops it. The
 * field client starts every configured input the same way (start.ts), as the distributor treats its
 * sinks (internal-network/distributor/sinks/sink.ts).
 */
export interface LocalInput {
  /** for logs and errors: 'http', 'mqtt', 'folder' */
  readonly name: string;
  /** the port it listens on, once started; undefined for an input that does not listen */
  readonly port?: number | undefined;
  start(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Holds at most `max` connections on `server` (Node's maxConnections): one more is closed as it is
 * accepted, before a byte of its protocol is read (it gets no answer: MQTT's CONNACK has no "busy",
 * §3.2.2.3), and logged as FIELD_INPUT_BUSY on `busyLog` (a LimitedLog: a program opening
 * connections in a loop would be a line each). Each connection is bounded on its own (its
 * deadlines, its packets' or body's size), not how many there are: enough of them took every file
 * descriptor of the field client, its link's and queue's included.
 */
export function capConnections(server: Server, max: number, busyLog: LimitedLog, protocol: 'HTTP' | 'MQTT'): void {
  server.maxConnections = max;
  server.on('drop', (d) =>
    busyLog.write({ code: 'FIELD_INPUT_BUSY', remoteAddress: d?.remoteAddress, maxConnections: max }, `${max} ${protocol} connections are open, the most held at once: one more closed as it was accepted`),
  );
}
