import type { UplinkEnvelope } from '../../shared/contract/envelope.ts';
import { verifyGroup, verifyMessage, type MessageAuth } from '../../shared/security/message-auth.ts';

/**
 * Which messages of an uplink envelope the device provably sent: the walk over its signatures
 * (shared/security/message-auth.ts) that every internal consumer of device messages makes — the
 * distributor before it writes, the command API before it records a response. Whatever crossed the
 * DMZ is only a claim until its MAC verifies under the key the internal registry holds.
 */
export type Message = UplinkEnvelope['messages'][number];

/** The envelope fields a MAC covers, with its messages (of one data type). */
export interface SignedEnvelope<M extends Message = Message> {
  deviceId: string;
  dataType: UplinkEnvelope['dataType'];
  messages: readonly M[];
}

/** A message whose signature is intact, with the identity (epoch, seq) the signature vouches for. */
export interface AuthenticMessage<M extends Message = Message> {
  message: M;
  epoch: string;
  seq: number;
  /** epoch ms: when the device signed it (its signature's `ts`) */
  signedAt: number;
  /** the signature's version: 1 signed alone, 2 in a signed group */
  version: MessageAuth['v'];
}

/** The messages of an envelope by what their signature proves. */
export interface SortedMessages<M extends Message = Message> {
  /** signed, and the MAC verifies under the key */
  authentic: AuthenticMessage<M>[];
  /** signed (or in a signed group), but the MAC does not verify, covers an incomplete or altered
   * group, or there is no key to verify it with */
  unverified: M[];
  /** no signature at all: no `auth`, and not in a group whose first message carries one */
  unsigned: M[];
}

/** Whether the MAC in `auth` covers exactly these messages, under the device's key. */
export function isIntact(key: Buffer, env: SignedEnvelope, auth: MessageAuth, members: ReadonlyArray<{ message: Message; seq: number | undefined }>): boolean {
  const first = members[0] as { message: Message };
  return auth.v === 1
    ? verifyMessage(key, { deviceId: env.deviceId, dataType: env.dataType, payload: first.message.payload }, auth)
    : members.length === auth.count &&
        members.every((x, j) => j === 0 || (x.message.auth === undefined && x.seq !== undefined)) &&
        verifyGroup(key, { deviceId: env.deviceId, dataType: env.dataType }, auth, members.map((x) => ({ seq: x.seq as number, payload: x.message.payload })));
}

/**
 * Walks the signatures of `env` in order: a message with `auth` v1 is signed alone; one with `auth`
 * v2 heads a group of `count` messages (those after it carry only their `seq`), which one MAC covers
 * whole — a group cut short, extended or altered verifies for none of its messages. Without a key
 * (unknown or revoked device) no signed message is authentic.
 */
export function sortBySignature<M extends Message>(key: Buffer | undefined, env: SignedEnvelope<M>): SortedMessages<M> {
  const sorted: SortedMessages<M> = { authentic: [], unverified: [], unsigned: [] };
  const messages = env.messages;
  for (let i = 0; i < messages.length; ) {
    const head = messages[i] as M;
    const auth = head.auth;
    if (!auth) {
      sorted.unsigned.push(head);
      i++;
      continue;
    }
    const group = auth.v === 1 ? [head] : messages.slice(i, i + auth.count);
    i += group.length;
    const members = group.map((g, j) => ({ message: g, seq: j === 0 ? auth.seq : g.seq }));
    if (key && isIntact(key, env, auth, members)) for (const m of members) sorted.authentic.push({ message: m.message, epoch: auth.epoch, seq: m.seq as number, signedAt: auth.ts, version: auth.v });
    else sorted.unverified.push(...group);
  }
  return sorted;
}

/** The messages of `env` whose signature is intact under `key`, in order; nothing else checked
 * (freshness and replay are the caller's concern). */
export function authenticMessages<M extends Message>(key: Buffer, env: SignedEnvelope<M>): AuthenticMessage<M>[] {
  return sortBySignature(key, env).authentic;
}
