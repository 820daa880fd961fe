import type WebSocket from 'ws';
import type { FieldClientConfig } from './config.ts';
import type { serverIdentityCheck } from './server-crl.ts';

/** A check's verdict: ok, a warning (works, but act soon), or a failure with what to do. */
export interface CheckResult {
  name: string;
  level: 'ok' | 'warn' | 'fail';
  detail: string;
  hint?: string;
}

/** One step of `fieldstream doctor`; it may leave in the context what later steps need. */
export type Check = (ctx: Context) => Promise<CheckResult | CheckResult[]>;
/** What the doctor's steps learn and hand on: the configuration, TLS material, the open connection. */
export interface Context {
  env: Record<string, string | undefined>;
  config?: Readonly<FieldClientConfig>;
  tls?: { ca: string; cert?: string; key?: string; checkServerIdentity?: ReturnType<typeof serverIdentityCheck> };
  /** the device token (FIELD_TOKEN_FILE), sent as the gateway's token route expects it */
  token?: string;
  url?: URL;
  welcome?: { gatewayId: string; serverTime: number; receivedAt: number; rttMs: number };
  ws?: WebSocket;
  /** how the gateway closed the doctor's WebSocket, once it did */
  closed?: { code: number; reason: string };
}
