import type { CommandFrame, DownlinkFrame } from '../../shared/contract/downlink.ts';
import type { DataType, EventPayload, FilePayload, ResponsePayload, TimeseriesPayload } from '../../shared/contract/payloads.ts';
import type { Logger } from '../../shared/logger.ts';
import type { CommandHandlers } from './commands.ts';
import type { GatewayConnection } from './gateway-connection.ts';

type PayloadOf = { timeseries: TimeseriesPayload; file: FilePayload; event: EventPayload; response: ResponsePayload };

interface Entry {
  messageId: string;
  seq: number;
  dataType: DataType;
  payload: unknown;
  sent: boolean;
  resolve: (messageId: string) => void;
  reject: (err: Error) => void;
}

export interface FieldClientOptions {
  deviceId: string;
  /** messages per frame */
  batchMax: number;
  /** messages sent and not yet acknowledged */
  window: number;
}

/** Error codes after which sending the same message again can succeed. */
const TRANSIENT = new Set(['GATEWAY_BROKER_UNAVAILABLE', 'GATEWAY_TOO_MANY_IN_FLIGHT']);

/** Remember this many answered command ids, so a command delivered twice is answered once. */
const ANSWERED_MEMORY = 1000;

/**
 * Sends readings, events, files and command responses to the gateway and keeps each one until
 * the gateway acks it. Messages carry a stable identity, `BOOT.SEQ` (boot epoch and sequence), and
 * are sent in order, in batches, with a window of unacknowledged messages; after a reconnect the
 * client resends from the first unacknowledged one.
 */
export class FieldClient {
  private readonly bootEpoch = Date.now().toString(36);
  private seq = 0;
  private readonly entries = new Map<string, Entry>();
  private inFlight = 0;
  private flushScheduled = false;
  private readonly answered = new Set<string>();

  constructor(
    private readonly options: FieldClientOptions,
    private readonly connection: GatewayConnection,
    private readonly commands: CommandHandlers,
    private readonly log: Logger,
  ) {
    connection.on('open', () => this.onOpen());
    connection.on('close', () => this.onClose());
    connection.on('frame', (frame) => this.onFrame(frame));
  }

  get pending(): number {
    return this.entries.size;
  }

  /** Resolves with the message id once the gateway acknowledged it (it is then in the broker). */
  submit<T extends DataType>(dataType: T, payload: PayloadOf[T]): Promise<string> {
    const seq = this.seq++;
    const messageId = `${this.bootEpoch}.${seq}`;
    return new Promise((resolve, reject) => {
      this.entries.set(messageId, { messageId, seq, dataType, payload, sent: false, resolve, reject });
      this.scheduleFlush();
    });
  }

  private onOpen(): void {
    // Resend from the first unacknowledged message, in order (Map iteration is insertion order).
    for (const e of this.entries.values()) e.sent = false;
    this.inFlight = 0;
    this.scheduleFlush();
  }

  private onClose(): void {
    this.inFlight = 0;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // setImmediate: everything submitted in this turn of the event loop goes out in one frame.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (!this.connection.isOpen) return;
    let batch: Entry[] = [];
    for (const e of this.entries.values()) {
      if (this.inFlight >= this.options.window) break;
      if (e.sent) continue;
      e.sent = true;
      this.inFlight++;
      batch.push(e);
      if (batch.length >= this.options.batchMax) {
        this.sendBatch(batch);
        batch = [];
      }
    }
    if (batch.length > 0) this.sendBatch(batch);
  }

  private sendBatch(batch: Entry[]): void {
    this.connection.send(
      JSON.stringify({
        deviceId: this.options.deviceId,
        batch: batch.map((e) => ({ dataType: e.dataType, messageId: e.messageId, seq: e.seq, payload: e.payload })),
      }),
    );
  }

  private onFrame(frame: DownlinkFrame): void {
    switch (frame.type) {
      case 'ack':
        for (const id of frame.messageIds) {
          const e = this.entries.get(id);
          if (!e) continue;
          this.entries.delete(id);
          if (e.sent) this.inFlight--;
          e.resolve(id);
        }
        this.scheduleFlush();
        return;
      case 'error':
        this.onError(frame);
        return;
      case 'command':
        void this.onCommand(frame);
        return;
    }
  }

  private onError(frame: Extract<DownlinkFrame, { type: 'error' }>): void {
    this.log.warn({ code: frame.code, messages: frame.messageIds?.length ?? 0 }, frame.message);
    for (const id of frame.messageIds ?? []) {
      const e = this.entries.get(id);
      if (!e) continue;
      if (e.sent) this.inFlight--;
      if (TRANSIENT.has(frame.code)) {
        e.sent = false; // sent again with the next flush, in order
      } else {
        this.entries.delete(id);
        e.reject(Object.assign(new Error(`${frame.code}: ${frame.message}`), { code: frame.code }));
      }
    }
    if (frame.messageIds?.some((id) => this.entries.has(id))) setTimeout(() => this.scheduleFlush(), 1000).unref();
  }

  private async onCommand(frame: CommandFrame): Promise<void> {
    if (this.answered.has(frame.commandId)) {
      this.log.info({ commandId: frame.commandId }, 'command delivered again; already answered');
      return;
    }
    this.answered.add(frame.commandId);
    if (this.answered.size > ANSWERED_MEMORY) this.answered.delete(this.answered.values().next().value as string);
    const outcome = await this.commands.run(frame);
    this.log.info({ commandId: frame.commandId, command: frame.command, status: outcome.status }, 'command answered');
    await this.submit('response', {
      commandId: frame.commandId,
      status: outcome.status,
      ...(outcome.result !== undefined ? { result: outcome.result } : {}),
      timestamp: new Date().toISOString(),
    }).catch((err: Error) => this.log.error({ err: err.message }, 'command response refused'));
  }
}
