import { signGroup, type MessageAuth } from '../security/message-auth.ts';

/** One message of an uplink frame, its payload already JSON text. */
export interface FrameItem {
  dataType: string;
  messageId: string;
  seq: number;
  payloadJson: string;
  auth?: MessageAuth;
}

/**
 * A batch frame, `{"deviceId": ..., "batch": [{"dataType", "messageId", "seq", "payload", "auth"?}]}`
 * (parsed by uplink.ts beside it), with each payload spliced in as the text the queue made of it when
 * it was accepted: the same text its signature covers. Every other value goes through
 * JSON.stringify. Serialising each payload again for the frame cost about a microsecond per
 * reading (measured); payloads are most of a frame.
 */
export function batchFrame(deviceId: string, items: readonly FrameItem[]): string {
  let text = `{"deviceId":${JSON.stringify(deviceId)},"batch":[`;
  for (let i = 0; i < items.length; i++) {
    const m = items[i] as FrameItem;
    text += `${i === 0 ? '' : ','}{"dataType":${JSON.stringify(m.dataType)},"messageId":${JSON.stringify(m.messageId)},"seq":${m.seq},"payload":${m.payloadJson}`;
    text += m.auth ? `,"auth":${JSON.stringify(m.auth)}}` : '}';
  }
  return `${text}]}`;
}

/**
 * The batch frame of `items`, signed as a device signs at sending time: the messages of each data
 * type form one signed group (version 2), whose first message carries the MAC
 * (shared/security/message-auth.ts); `epoch` with each item's `seq` is its identity for the replay
 * window. Sets `auth` on the first item of each group.
 */
export function signedBatchFrame(key: Buffer, h: { deviceId: string; epoch: string; ts: number }, items: FrameItem[]): string {
  const byType = new Map<string, FrameItem[]>();
  for (const item of items) {
    const group = byType.get(item.dataType);
    if (group) group.push(item);
    else byType.set(item.dataType, [item]);
  }
  for (const [dataType, group] of byType) (group[0] as FrameItem).auth = signGroup(key, { deviceId: h.deviceId, dataType, epoch: h.epoch, ts: h.ts }, group);
  return batchFrame(h.deviceId, items);
}
