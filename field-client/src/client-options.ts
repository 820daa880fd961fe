import type { DataType, EventPayload, FilePayload, HealthPayload, ResponsePayload, TimeseriesPayload } from '../../shared/contract/payloads.ts';
import type { CommitOptions } from './commit-receipts.ts';

/** The payload each data type carries. */
export type PayloadOf = { timeseries: TimeseriesPayload; file: FilePayload; event: EventPayload; response: ResponsePayload; health: HealthPayload };
/** What the device's inputs hand the field client: a data type and its payload. */
export type Submission = { [K in DataType]: { dataType: K; payload: PayloadOf[K] } }[DataType];

export interface FieldClientOptions {
  deviceId: string;
  /** messages per frame */
  batchMax: number;
  /** messages sent and not yet acknowledged */
  window: number;
  /** chunks of one file sent and not yet committed */
  fileWindow: number;
  /**
   * Commit receipts (on when the device has a signing key, which they are verified with): a
   * message acknowledged by the gateway is kept until its receipt says the internal network holds it.
   */
  commit?: CommitOptions | undefined;
  /**
   * bytes: the queue's limit, which the files waiting in the outbox and what is set aside
   * (rejected.jsonl, rejected/) count against too
   */
  maxBytes: number;
  /** where refused messages are set aside */
  dataDir: string;
  /** the device's message-signing key; messages are signed when they are sent */
  signingKey?: Buffer | undefined;
  /** milliseconds: the first pause after a transient error frame (TIMINGS.transientRewindMs; see rewind-backoff.ts) */
  transientRewindMs?: number | undefined;
  /** milliseconds of GATEWAY_BROKER_UNAVAILABLE without progress before leaving for the next URL (TIMINGS.fieldBrokerUnavailableMoveMs) */
  brokerUnavailableMoveMs?: number | undefined;
  /** milliseconds of the link's measured rate kept handed out and not yet answered (TIMINGS.fieldSendAheadMs; see send-pacing.ts) */
  sendAheadMs?: number | undefined;
}
