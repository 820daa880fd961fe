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
