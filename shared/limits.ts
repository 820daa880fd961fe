/**
 * Protective limits, each with its unit and the reason for its value. Services may lower them
 * through their configuration; nothing raises them silently.
 */
export const LIMITS = {
  /** bytes. Largest WebSocket frame the gateway reads (ws `maxPayload`; ws defaults to 100 MiB,
   * far more than any message we accept). Sized for an inline base64 file of FILE_MAX_BYTES. */
  frameMaxBytes: 8 * 1024 * 1024,
  /** bytes. Largest file carried inline in one message (base64 expands it by 4/3). */
  fileMaxBytes: 5 * 1024 * 1024,
  /** chunks. Most chunks of one chunked file transfer. */
  fileMaxChunks: 100_000,
  /** bytes. Largest file sent in chunks (10 GiB). */
  fileTransferMaxBytes: 10 * 1024 * 1024 * 1024,
  /** messages. Largest batch in one frame. */
  batchMaxMessages: 1000,
  /** fields. Most fields in one time-series reading. */
  readingMaxFields: 256,
  /** characters. Longest string value stored in a field. */
  stringMaxChars: 64 * 1024,
  /** messages. Messages of one connection waiting for the broker's PUBACK; past it the gateway
   * stops reading from that socket until the broker catches up (backpressure, not loss). */
  inFlightPerConnection: 5000,
  /** bytes. A device whose unsent downlink exceeds this is too slow to read; it is disconnected
   * rather than let the gateway's memory grow (ws `send()` buffers without bound). */
  sendBufferMaxBytes: 4 * 1024 * 1024,
  /** milliseconds. How long the gateway waits for a PUBACK before reporting the message failed. */
  publishTimeoutMs: 30_000,
  /** seconds. Longest a command may stay deliverable (the command API's ttlSeconds); the field
   * client's default FIELD_COMMAND_MAX_AGE_S, so a command delivered late but within its TTL runs. */
  commandMaxTtlS: 30 * 86_400,
  /** characters. Longest device id; it is a certificate CN, an MQTT topic level and a folder name. */
  deviceIdMaxChars: 64,
  /** bytes. Longest file name (UTF-8) a device may give. */
  filenameMaxBytes: 200,
  /** sequence numbers. How far below the highest accepted sequence number of a device and epoch
   * the distributor still tells a new message from a copy (its replay window). A device never has
   * messages further apart than this outstanding at once (FIELD_COMMIT_WINDOW_MESSAGES is below
   * it), so a copy it sends again is always recognised, and answered with a receipt. */
  replayWindowSeqs: 65_536,
  /** milliseconds. The longest a field client waits for a commit receipt before it sends a message
   * again: the wait (FIELD_COMMIT_TIMEOUT_MS) doubles after each resend that brought no receipt, so
   * a long outage of the internal side costs a resend every quarter of an hour, not every minute. */
  commitTimeoutMaxMs: 15 * 60 * 1000,
  /** ranges. Most ranges of sequence numbers in one commit receipt (one device and epoch); a
   * device's messages are committed mostly in order, so a write yields a few ranges, not thousands. */
  receiptMaxRanges: 4096,
  /** receipts. Most receipts (device and epoch) in one receipts message to a gateway; a write with
   * more devices than this is answered in several messages. */
  receiptsPerMessage: 2000,
} as const;

export type Limits = typeof LIMITS;
