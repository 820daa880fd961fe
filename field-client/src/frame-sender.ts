import type { WelcomeFrame } from '../../shared/contract/downlink.ts';
import { batchFrame, signedBatchFrame, type FrameItem } from '../../shared/contract/uplink-frame.ts';
import { LIMITS } from '../../shared/limits.ts';
import type { Logger } from '../../shared/logger.ts';
import type { FieldClientOptions } from './client-options.ts';
import type { GatewayConnection } from './gateway-connection.ts';
import type { Refusal } from './rejected.ts';
import type { SendPacing } from './send-pacing.ts';

/**
 * Turns what the field client's pump sends into frames on the connection: signed on the gateway's
 * clock (carried on from its welcome), never past the gateway's frame limit. A message too large
 * for any frame is not sent but kept as a refusal, for the client to set aside once its pump is done.
 */
export class FrameSender {
  /** milliseconds the gateway's clock was ahead of this one at its last welcome (undefined: no welcome yet) */
  private clockOffsetMs: number | undefined;
  /**
   * The gateway's clock at its last welcome, and this process's monotonic clock (performance.now())
   * then: signing times are the one carried on by the other. Not this clock plus the offset: a
   * device's clock set while connected (NTP stepping a device that booted days behind, after it
   * reached the gateway) moved every signing time by the step, and had everything it sent refused
   * as stale (SECURITY_STALE, never receipted) until its connection happened to drop.
   */
  private gatewayClock: { serverTime: number; at: number } | undefined;
  /** messages the pump found too large for any frame of the gateway's, refused once it is done (see oversized) */
  private oversizedRefusals: Refusal[] = [];

  constructor(
    private readonly options: Pick<FieldClientOptions, 'deviceId' | 'signingKey'>,
    private readonly connection: GatewayConnection,
    private readonly pacing: SendPacing,
    /** the client's stats: messages sent are counted in them */
    private readonly stats: { sent: number },
    /** the connection's welcome (undefined before it), whose limits hold */
    private readonly welcomeOf: () => WelcomeFrame | undefined,
    private readonly log: Logger,
  ) {}

  private get welcome(): WelcomeFrame | undefined {
    return this.welcomeOf();
  }

  /** see FieldClient.clockOffset */
  get clockOffset(): number | undefined {
    return this.clockOffsetMs;
  }

  /** A connection's welcome arrived: its clock is the one frames are signed on from now. */
  welcomed(serverTime: number): void {
    this.clockOffsetMs = serverTime - Date.now();
    this.gatewayClock = { serverTime, at: performance.now() };
  }

  /** The messages found too large for any frame since the last call (see oversized). */
  takeRefusals(): Refusal[] {
    const refusals = this.oversizedRefusals;
    this.oversizedRefusals = [];
    return refusals;
  }

  /**
   * Sends messages in one frame, signed at sending time (`ts` is this copy's, so a resend after an
   * outage is fresh): see signedBatchFrame. `seq` with `epoch` is each message's identity for the
   * replay window: queue sequence numbers, or a transfer's chunk indexes.
   * `ts` is on the gateway's clock (its welcome's, carried on by this process's monotonic clock,
   * which setting the device's clock does not move): the distributor holds it to the gateway's time
   * of receipt, and a device whose own clock is off by more than the freshness window would
   * otherwise have every message refused as stale.
   */
  sendFrame(epoch: string, items: FrameItem[]): void {
    const { deviceId, signingKey } = this.options;
    const g = this.gatewayClock;
    const now = performance.now();
    const ts = g ? Math.round(g.serverTime + (now - g.at)) : Date.now();
    const text = signingKey ? signedBatchFrame(signingKey, { deviceId, epoch, ts }, items) : batchFrame(deviceId, items);
    // The gateway reads no frame past its limit (ws maxPayload, the welcome's frameMaxBytes): it
    // closes the connection (1009) unanswered, and the same frame went again after every reconnect,
    // for ever, with everything queued behind it. A UTF-8 byte count only where it may be past it
    // (at most 3 bytes per UTF-16 unit): most frames are far below.
    const limit = this.welcome?.limits.frameMaxBytes ?? LIMITS.frameMaxBytes;
    if (text.length * 3 > limit) {
      const bytes = Buffer.byteLength(text, 'utf8');
      if (bytes > limit) {
        this.oversized(epoch, items, bytes, limit);
        return;
      }
    }
    this.stats.sent += items.length;
    this.connection.send(text);
    // Its length in UTF-16 units: its bytes, but for the few characters outside ASCII a payload may hold.
    this.pacing.handed((items[items.length - 1] as FrameItem).messageId, text.length, now);
  }

  /**
   * A frame past the gateway's limit: several messages go in smaller frames; a message alone past it
   * can never be sent, so it is refused here as the gateway would refuse it (CONTRACT_FRAME_TOO_LARGE),
   * set aside whole, never deleted unwritten (a file with its chunks: into rejected/). A message the
   * field client's own inputs take can be one: a JSON body of 8 MiB is a frame of 8 MiB and
   * its envelope, and bytes that are not UTF-8 become U+FFFD, three bytes each; and a gateway may
   * announce less than LIMITS.frameMaxBytes (GATEWAY_MAX_FRAME_BYTES).
   */
  private oversized(epoch: string, items: FrameItem[], bytes: number, limit: number): void {
    if (items.length > 1) {
      const half = Math.ceil(items.length / 2);
      for (const item of items) delete item.auth; // signed again, per frame
      this.sendFrame(epoch, items.slice(0, half));
      this.sendFrame(epoch, items.slice(half));
      return;
    }
    const item = items[0] as FrameItem;
    const message = `The message is ${bytes} bytes as a frame; the gateway takes frames of at most ${limit} bytes. Set aside by the field client, not sent.`;
    this.log.error({ code: 'CONTRACT_FRAME_TOO_LARGE', messageId: item.messageId, bytes, limit }, 'a message larger than any frame the gateway takes: set aside, not sent');
    // Once the pump is done: setting a file aside moves it out of the outbox while the pump may still
    // be reading chunks of it.
    this.oversizedRefusals.push({ code: 'CONTRACT_FRAME_TOO_LARGE', message, messageIds: [item.messageId] });
  }
}
